"""`python -m dalle_flow weights list|download|verify [--only GROUPS] [--dir PATH]`.

`list` works offline: what is present (and where), what is missing, and the disk still needed. `download` fetches
what is missing (resuming partial files, checking sizes and hashes: see `dalle_flow.serving.weights.fetch_url`) and
ends with a summary table. `verify` re-checks what is present and fails on a missing file, a wrong size or hash, or a
file nothing can vouch for (no expected size or hash, no download record, not in the hub cache).
"""
from __future__ import annotations

from pathlib import Path

from dalle_flow.serving import weights
from dalle_flow.serving.weights import GROUPS, WeightFile


def selected(only: str | None) -> list[WeightFile]:
    try:
        registry = weights.entries()
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    if not only:
        return registry
    groups = [g.strip() for g in only.split(",") if g.strip()]
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise SystemExit(f"--only: unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    return [entry for entry in registry if entry.group in groups]


def _size_text(n: int | None, approx: bool = False) -> str:
    if n is None:
        return "?"
    prefix = "≈" if approx else ""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{prefix}{n / scale:.1f} {unit}"
    return f"{n} B"


def _print_table(rows: list[tuple[str, str, str, str]]):
    header = ("file", "size", "status", "where")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def run(action: str, only: str | None, directory: str | None) -> int:
    entries = selected(only)
    rows, needed, failures = [], 0, 0
    for entry in entries:
        path, status = weights.find_local(entry, directory), None
        if path is None and action == "download":
            try:
                path = weights.download(entry, Path(directory) / entry.group if directory else None)
            except (OSError, ValueError) as exc:
                rows.append((entry.key, _size_text(entry.size or entry.approx_size, entry.size is None),
                             f"FAILED: {exc}", entry.source))
                failures += 1
                continue
            checked = weights.read_record(path).get("checked_against", "the hub client")
            status = f"downloaded (checked against {checked})"  # checked while downloading: no second hash
        if path is None:
            needed += entry.size or entry.approx_size or 0
            rows.append((entry.key, _size_text(entry.size or entry.approx_size, entry.size is None), "missing",
                         entry.source))
            failures += action == "verify"
            continue
        if status is None:
            status = weights.verify_file(entry, path) if action in ("verify", "download") else "present"
        failures += status.startswith("BAD") or (action == "verify" and status.startswith("unverified"))
        rows.append((entry.key, _size_text(path.stat().st_size), status, str(path)))
    _print_table(rows)
    if action == "list":
        print(f"\nmissing: {sum(r[2] == 'missing' for r in rows)} file(s), about {_size_text(needed)} of disk needed")
    return 1 if failures else 0


def add_parser(commands):
    p = commands.add_parser("weights", help="list, download or verify the real checkpoints")
    p.add_argument("action", choices=["list", "download", "verify"])
    p.add_argument("--only", help=f"comma-separated groups: {','.join(GROUPS)}")
    p.add_argument("--dir", help="weights directory (default $DALLE_FLOW_WEIGHTS_DIR, else the caches)")
    p.set_defaults(func=lambda args: run(args.action, args.only, args.dir))
