"""Parity checks against reference fixtures (see tests/fixtures/parity/README.md).

A fixture folder holds `fixture.json` whose `kind` names the model family. `KIND_MODULES` maps a kind prefix to the
module that knows how to load that family's checkpoint with the project's own loader and run the folder's cases.
Each such module exposes ``run_fixture(folder: Path, spec: dict) -> list[CaseResult]``.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

from dalle_flow.parity.compare import CaseResult

# kind prefix -> module with run_fixture(); longest matching prefix wins.
KIND_MODULES = {
    "dallebart": "dalle_flow.parity.dallebart",
    "vqgan_f16": "dalle_flow.parity.vqgan",
    "glid3_xl_latent_unet": "dalle_flow.parity.glid3_unet",
    "ldm_autoencoder_kl": "dalle_flow.parity.kl_vae",
    "ldm_bert_embedder": "dalle_flow.parity.bert",
    "swinir_realsr": "dalle_flow.parity.swinir",
}


class UnknownFixtureKind(ValueError):
    pass


def module_for_kind(kind: str):
    matches = [prefix for prefix in KIND_MODULES if kind.startswith(prefix)]
    if not matches:
        raise UnknownFixtureKind(f"unknown fixture kind {kind!r}; known prefixes: {sorted(KIND_MODULES)}")
    return importlib.import_module(KIND_MODULES[max(matches, key=len)])


def read_spec(folder: Path) -> dict:
    with open(Path(folder) / "fixture.json") as f:
        return json.load(f)


def run_fixture(folder) -> list[CaseResult]:
    folder = Path(folder)
    spec = read_spec(folder)
    return module_for_kind(spec["kind"]).run_fixture(folder, spec)


def find_fixture_dirs(root) -> list[Path]:
    """Every folder under root (root included) that holds a fixture.json."""
    return sorted(p.parent for p in Path(root).rglob("fixture.json"))


__all__ = ["CaseResult", "KIND_MODULES", "UnknownFixtureKind", "find_fixture_dirs", "module_for_kind", "read_spec",
           "run_fixture"]
