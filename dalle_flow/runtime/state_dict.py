"""Strict state_dict loading and the key-and-shape comparison behind it, shared by the loaders and the parity checks.

A checkpoint that does not fit should fail with one message naming every problem (torch's load_state_dict stops
at the first size mismatch), and a parity manifest check should say what differs; both are the same comparison.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

_LISTED = 10  # keys named per kind of problem; the count is always given


class CheckpointMismatchError(ValueError):
    """A checkpoint that does not fit the model it is loaded into (every strict loader raises this one)."""


def shape_mismatch(found: Mapping[str, tuple], expected: Mapping[str, tuple]) -> str:
    """'' when `found` has exactly the keys of `expected` with the same shapes; otherwise one line:
    'missing N: a, b; unexpected N: c; wrong shape N: d: got (..), want (..)' (keys sorted)."""
    found = {k: tuple(v) for k, v in found.items()}
    expected = {k: tuple(v) for k, v in expected.items()}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = [f"{k}: got {found[k]}, want {expected[k]}"
             for k in sorted(set(found) & set(expected)) if found[k] != expected[k]]
    return "; ".join(f"{label} {len(items)}: {', '.join(items[:_LISTED])}{' ...' if len(items) > _LISTED else ''}"
                     for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                     if items)


def load_state_dict_strict(model: nn.Module, state: Mapping[str, torch.Tensor], what: str,
                           assign: bool = False) -> None:
    """Every tensor of `state` used and every entry of model.state_dict() filled, shapes equal; otherwise one
    CheckpointMismatchError '<what>: does not match the <Model>; missing ...' (got = the file, want = the model).

    assign=True adopts the checkpoint's tensors instead of copying (for a model built on the meta device).
    """
    problems = shape_mismatch({k: v.shape for k, v in state.items()},
                              {k: v.shape for k, v in model.state_dict().items()})
    if problems:
        raise CheckpointMismatchError(f"{what}: does not match the {type(model).__name__}; {problems}")
    model.load_state_dict(state, strict=True, assign=assign)
