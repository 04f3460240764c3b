"""Presets: 'real' loads the released checkpoints; 'tiny' builds every model small, random and deterministic.

The tiny preset exists for tests and smoke demos. Everything it produces is tagged ``preset: tiny``.
"""
from __future__ import annotations

import os

ENV_VAR = "DALLE_FLOW_PRESET"
PRESETS = ("real", "tiny")


def preset_name(explicit: str | None = None) -> str:
    name = (explicit or os.environ.get(ENV_VAR) or "real").strip().lower()
    if name not in PRESETS:
        raise ValueError(f"{ENV_VAR}: must be one of {', '.join(PRESETS)}, got {name!r}")
    return name


def is_tiny(explicit: str | None = None) -> bool:
    return preset_name(explicit) == "tiny"


def preset_tags(explicit: str | None = None) -> dict:
    """Tags every output carries; the tiny preset labels itself so nobody mistakes its noise for a model's output."""
    return {"preset": "tiny"} if is_tiny(explicit) else {}
