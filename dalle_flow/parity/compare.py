"""Comparison helpers shared by every family's parity module."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class CaseResult:
    name: str
    ok: bool
    max_abs_err: float = 0.0
    detail: str = ""

    def line(self) -> str:
        status = "ok" if self.ok else "FAIL"
        extra = f"  {self.detail}" if self.detail else ""
        return f"{self.name:<32} max_abs_err={self.max_abs_err:.3g}  {status}{extra}"


def load_npz(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def compare_arrays(name: str, actual, expected, atol: float, rtol: float) -> CaseResult:
    """np.allclose semantics (|a - e| <= atol + rtol * |e|), reporting the max absolute error."""
    actual = np.asarray(_to_numpy(actual))
    expected = np.asarray(expected)
    if actual.shape != expected.shape:
        return CaseResult(name, False, float("inf"), f"shape {actual.shape} != expected {expected.shape}")
    if actual.size == 0:
        return CaseResult(name, True, 0.0)
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    if not np.all(np.isfinite(a)):
        return CaseResult(name, False, float("inf"), "non-finite values")
    err = np.abs(a - e)
    ok = bool(np.all(err <= atol + rtol * np.abs(e)))
    return CaseResult(name, ok, float(err.max()))


def compare_exact(name: str, actual, expected) -> CaseResult:
    actual = np.asarray(_to_numpy(actual))
    expected = np.asarray(expected)
    if actual.shape != expected.shape:
        return CaseResult(name, False, float("inf"), f"shape {actual.shape} != expected {expected.shape}")
    mismatches = int(np.sum(actual != expected))
    err = float(np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max()) if actual.size else 0.0
    return CaseResult(name, mismatches == 0, err, f"{mismatches} mismatching entries" if mismatches else "")


def compare_state_shapes(name: str, shapes: dict[str, tuple], expected: dict[str, list]) -> CaseResult:
    """Key-for-key and shape-for-shape comparison of a model's tensors against a manifest."""
    expected = {k: tuple(v) for k, v in expected.items()}
    shapes = {k: tuple(v) for k, v in shapes.items()}
    missing = sorted(set(expected) - set(shapes))
    extra = sorted(set(shapes) - set(expected))
    wrong = sorted(k for k in set(shapes) & set(expected) if shapes[k] != expected[k])
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} (e.g. {missing[:3]})")
    if extra:
        problems.append(f"unexpected {len(extra)} (e.g. {extra[:3]})")
    if wrong:
        problems.append(f"wrong shape {len(wrong)} (e.g. {[(k, shapes[k], expected[k]) for k in wrong[:3]]})")
    ok = not problems
    return CaseResult(name, ok, 0.0, f"{len(expected)} tensors match" if ok else "; ".join(problems))


def read_manifest(folder) -> dict | None:
    path = Path(folder) / "manifest_full.json"
    if not path.exists():
        return None
    with open(path) as f:
        return json.load(f)


def _to_numpy(x):
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return x
