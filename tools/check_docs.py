"""Checks that the README's "Endpoints and parameters" table says what the Flow serves.

    python tools/check_docs.py    # one line per disagreement; exit status 1 when there is any

Three sources must agree: `flow.yml` (its executors, their `config.yml` settings and the endpoints their classes
serve), the pipelines' parameter declarations (as each executor builds them from its settings) and the README table
(endpoint list; every parameter's name, default, range or choices). A table cell lists parameters as
`` `name` (default; range) ``; text after the range (a comment) is free. Where one endpoint feeds two executors (`/`),
the cell is split by the labels of `SECTION_LABELS`.
"""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
SECTION_LABELS = {"DALL·E Mega:": "dalle", "GLID-3 XL:": "diffusion"}
TABLE_HEADER = "| endpoint | request | response | parameters (default; range) |"
_ITEM = re.compile(r"`(\w+)`(?: \(([^;()]*)(?:; ([^()]*))?\))?")
_NUMBER = r"-?\d+(?:\.\d+)?(?:\^\d+)?"


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"_checked_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def flow_executors(flow_path: Path) -> dict[str, dict]:
    """name -> {'config': its config.yml `with:` settings, 'module': its executor module, 'cls': its class}."""
    flow = yaml.safe_load(flow_path.read_text())
    out = {}
    for executor in flow["executors"]:
        config_path = flow_path.parent / executor["uses"]
        config = yaml.safe_load(config_path.read_text())
        module = load_module(config_path.parent / config["py_modules"][0])
        out[executor["name"]] = {"config": config.get("with") or {}, "module": module,
                                 "cls": getattr(module, config["jtype"])}
    return out


def served_endpoints(cls) -> set[str]:
    """The endpoints an executor class binds (its own and its bases' @requests)."""
    by_class = getattr(cls, "requests_by_class", {})
    return {endpoint for base in cls.__mro__ for endpoint in by_class.get(base.__name__, {})}


def served_declarations(executors: dict[str, dict]) -> dict[str, dict[str, object]]:
    """endpoint -> {executor name: the Params it parses there}, built as each executor builds them at start-up."""
    from dalle_flow.models.swinir import SwinIRConfig
    from dalle_flow.pipelines.clipseg import SEGMENT_PARAMS
    from dalle_flow.pipelines.dalle_mega import DALLE_PARAMS
    from dalle_flow.pipelines.glid3 import GENERATE_PARAMS, REFINE_PARAMS
    from dalle_flow.pipelines.swinir import upscale_params

    out: dict[str, dict[str, object]] = {}
    for name, executor in executors.items():
        config, module = executor["config"], executor["module"]
        declared = {
            "DalleMega": lambda: {"/": DALLE_PARAMS},
            "GLID3Diffusion": lambda: {"/": GENERATE_PARAMS.with_defaults(steps=config["steps"]),
                                       "/diffuse": REFINE_PARAMS.with_defaults(steps=config["steps"])},
            "SwinIRUpscaler": lambda: {"/upscale": upscale_params(SwinIRConfig().window_size,
                                                                  config["max_input_side"])},
            "ClipSegmenter": lambda: {"/segment": SEGMENT_PARAMS},
            "ImageStoreExecutor": lambda: {"/history": module.HISTORY_PARAMS},
        }.get(executor["cls"].__name__, dict)()
        for endpoint, params in declared.items():
            out.setdefault(endpoint, {})[name] = params
    return out


def readme_table(readme: str) -> dict[str, str]:
    """endpoint -> its parameters cell, from the README's table."""
    start = readme.index(TABLE_HEADER)
    rows = {}
    for line in readme[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        for endpoint in re.findall(r"`(/[\w/]*)`", cells[0]):
            rows[endpoint] = cells[-1]
    return rows


def _number(text: str) -> float:
    if "^" in text:
        base, power = text.split("^")
        return float(base) ** int(power)
    return float(text)


def _default_text(spec) -> str:
    if spec.default is None:
        return "off"
    if spec.kind == "bool":
        return "true" if spec.default else "false"
    if spec.kind == "choice":
        return f"`{spec.default}`"
    return f"{spec.default:g}" if isinstance(spec.default, float) else str(spec.default)


def check_item(where: str, spec, default: str | None, rest: str | None) -> list[str]:
    """Disagreements between one documented `name (default; range)` and its declaration."""
    if default is None:
        return []  # named only (e.g. `seed`): nothing more is claimed
    problems = []
    if default.strip() != _default_text(spec):
        problems.append(f"{where}: `{spec.name}` default is {_default_text(spec)} in the code, "
                        f"{default.strip()} in the README")
    rest = rest or ""
    if spec.kind == "choice":
        documented = tuple(re.findall(r"`(\w+)`", rest))
        if documented != tuple(spec.choices):
            problems.append(f"{where}: `{spec.name}` choices are {list(spec.choices)} in the code, "
                            f"{list(documented)} in the README")
        return problems
    if spec.low is None and spec.high is None:
        return problems
    pair = re.match(rf"\s*({_NUMBER})–({_NUMBER})", rest)
    plus_minus = re.match(rf"\s*±({_NUMBER})", rest)
    at_least = re.match(rf"\s*≥ ({_NUMBER})", rest)
    if pair:
        documented = (_number(pair.group(1)), _number(pair.group(2)))
    elif plus_minus:
        documented = (-_number(plus_minus.group(1)), _number(plus_minus.group(1)))
    elif at_least:
        documented = (_number(at_least.group(1)), None)
    else:
        return problems + [f"{where}: `{spec.name}` has the range {spec.low}–{spec.high} in the code, none in the "
                           f"README"]
    declared = tuple(None if v is None else float(v) for v in (spec.low, spec.high))
    if documented != declared:
        problems.append(f"{where}: `{spec.name}` range is {declared} in the code, {documented} in the README")
    return problems


def check_cell(endpoint: str, cell: str, declarations: dict[str, object]) -> list[str]:
    sections = {name: cell for name in declarations}
    if len(declarations) > 1:  # one endpoint, several executors: the cell is split by their labels
        pattern = "(" + "|".join(re.escape(label) for label in SECTION_LABELS) + ")"
        parts = re.split(pattern, cell)
        sections = {SECTION_LABELS[label]: text for label, text in zip(parts[1::2], parts[2::2])}
        missing = set(declarations) - set(sections)
        if missing:
            return [f"{endpoint}: the README has no section for {sorted(missing)}"]
    problems = []
    for name, params in declarations.items():
        where = f"{endpoint} ({name})"
        items: dict[str, tuple] = {}
        for m in _ITEM.finditer(sections[name]):  # a name mentioned in a comment does not hide its own entry
            if m.group(2) is not None or m.group(1) not in items:
                items[m.group(1)] = (m.group(2), m.group(3))
        declared = {spec.name for spec in params.specs}
        for spec in params.specs:
            if spec.name not in items:
                problems.append(f"{where}: `{spec.name}` is served but not in the README")
            else:
                problems += check_item(where, spec, *items[spec.name])
        for extra in sorted(set(items) - declared):
            problems.append(f"{where}: the README lists `{extra}`, which is not served")
    return problems


def find_disagreements(readme: str, executors: dict[str, dict], declarations: dict | None = None) -> list[str]:
    declarations = served_declarations(executors) if declarations is None else declarations
    table = readme_table(readme)
    served = set().union(*(served_endpoints(e["cls"]) for e in executors.values()))
    problems = [f"{endpoint}: served by flow.yml but not in the README table"
                for endpoint in sorted(served - set(table))]
    problems += [f"{endpoint}: in the README table but not served by flow.yml"
                 for endpoint in sorted(set(table) - served)]
    for endpoint, cell in table.items():
        params = declarations.get(endpoint, {})
        if not params:
            if cell not in ("—", "-"):
                problems.append(f"{endpoint}: takes no parameters, but the README lists {cell!r}")
            continue
        problems += check_cell(endpoint, cell, params)
    return problems


def main() -> int:
    sys.path.insert(0, str(REPO_ROOT))
    problems = find_disagreements((REPO_ROOT / "README.md").read_text(), flow_executors(REPO_ROOT / "flow.yml"))
    for problem in problems:
        print(problem)
    print(f"{'FAILED' if problems else 'PASSED'}: {len(problems)} disagreement(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
