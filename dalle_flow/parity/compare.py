"""Comparison helpers shared by every family's parity module."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dalle_flow.runtime.state_dict import shape_mismatch


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


def compare_outputs(name: str, actual: dict, expected: dict[str, np.ndarray], atol: float, rtol: float) -> CaseResult:
    """One line for a case with several expected outputs: integer outputs (and every output when atol = rtol = 0)
    compared exactly, the rest with `compare_arrays`; ok when all are, reporting the worst error and what failed."""
    results = []
    for key, want in expected.items():
        if key not in actual:
            results.append(CaseResult(key, False, float("inf"), "not computed from these inputs"))
        elif np.issubdtype(want.dtype, np.integer) or (atol == 0 and rtol == 0):
            results.append(compare_exact(key, actual[key], want))
        else:
            results.append(compare_arrays(key, actual[key], want, atol, rtol))
    if not results:
        return CaseResult(name, False, float("inf"), "nothing compared")
    bad = [r for r in results if not r.ok]
    err = max(r.max_abs_err for r in results)
    detail = "; ".join(f"{r.name}: err {r.max_abs_err:.3g} {r.detail}".strip() for r in bad)
    return CaseResult(name, not bad, err, detail or f"{len(results)} outputs: {', '.join(r.name for r in results)}")


def compare_state_shapes(name: str, shapes: dict[str, tuple], expected: dict[str, list]) -> CaseResult:
    """Key-for-key and shape-for-shape comparison of a model's tensors (got) against a manifest (want)."""
    problems = shape_mismatch(shapes, expected)
    return CaseResult(name, not problems, 0.0, problems or f"{len(expected)} tensors match")


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
