"""The layering rules, read off the imports: executors -> pipelines -> models -> runtime, only downwards; no DocArray
or Jina below the executors' layer; weights and the device/dtype settings resolved by executors alone; every model
package on the template. And `resolve_device` itself."""
from __future__ import annotations

import ast

import pytest
import torch

from dalle_flow.runtime.device import resolve_device
from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "dalle_flow"
# module prefixes each layer must never import
FORBIDDEN = {
    "runtime": ("docarray", "jina", "dalle_flow.serving", "dalle_flow.models", "dalle_flow.pipelines"),
    "models": ("docarray", "jina", "dalle_flow.serving", "dalle_flow.pipelines", "dalle_flow.parameters"),
    "pipelines": ("docarray", "jina", "dalle_flow.serving"),
    "parameters.py": ("docarray", "jina", "dalle_flow."),
}
EXECUTOR_ONLY = ("resolve_device",)  # names only the executors (and their definition) may use


def imported_modules(source: str) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.append(node.module)
    return modules


def layer_violations(layer: str, files: dict[str, str]) -> list[str]:
    """'<file> imports <module>' for every forbidden import, and every use of an executor-only name."""
    problems = []
    for name, source in sorted(files.items()):
        for module in imported_modules(source):
            if any(module == p or module.startswith(p if p.endswith(".") else p + ".") for p in FORBIDDEN[layer]):
                problems.append(f"{name} imports {module}")
        used = {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)}
        used |= {a.name for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom) for a in n.names}
        problems += [f"{name} uses {n}" for n in EXECUTOR_ONLY if n in used]
    return problems


def layer_files(layer: str) -> dict[str, str]:
    root = PACKAGE / layer
    paths = [root] if root.suffix == ".py" else sorted(root.rglob("*.py"))
    return {str(p.relative_to(REPO_ROOT)): p.read_text() for p in paths}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_each_layer_imports_only_downwards(layer):
    files = layer_files(layer)
    if layer == "runtime":  # where resolve_device is defined
        files.pop("dalle_flow/runtime/device.py")
    assert files and layer_violations(layer, files) == []


@pytest.mark.parametrize("source, problem", [
    ("from docarray import Document\n", "m.py imports docarray"),
    ("import jina.helper\n", "m.py imports jina.helper"),
    ("from dalle_flow.serving.weights import resolve\n", "m.py imports dalle_flow.serving.weights"),
    ("from dalle_flow.runtime.device import resolve_device\n", "m.py uses resolve_device"),
])
def test_the_layer_check_can_fail(source, problem):
    assert problem in layer_violations("pipelines", {"m.py": source})


def test_every_model_package_follows_the_template():
    for package in sorted(p for p in (PACKAGE / "models").iterdir() if (p / "__init__.py").is_file()):
        names = {p.name for p in package.glob("*.py")}
        assert {"__init__.py", "config.py", "loader.py"} <= names, package.name
        exported = ast.parse((package / "__init__.py").read_text())
        public = next(n for n in exported.body if isinstance(n, ast.Assign) and n.targets[0].id == "__all__")
        names = {elt.value for elt in public.value.elts}
        assert any(n.startswith("load_") for n in names) and any(n.startswith("tiny_") for n in names), package.name


def test_resolve_device():
    assert resolve_device("cpu", "auto") == (torch.device("cpu"), torch.float32)
    assert resolve_device("cpu", "fp16") == (torch.device("cpu"), torch.float16)
    assert resolve_device(torch.device("cpu"), torch.bfloat16) == (torch.device("cpu"), torch.bfloat16)
    auto = resolve_device("auto", "auto")
    assert auto == ((torch.device("cuda"), torch.float16) if torch.cuda.is_available()
                    else (torch.device("cpu"), torch.float32))
    with pytest.raises(ValueError, match="dtype: must be one of auto, float32"):
        resolve_device("cpu", "float64")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device: 'cuda:1' was asked for but CUDA is not available"):
            resolve_device("cuda:1", "auto")
