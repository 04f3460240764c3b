"""Parity of the PyTorch VQGAN with vqgan-jax fixtures (kind 'vqgan_f16...'; see tests/fixtures/parity/vqgan/README.md).

Fixture arrays are NHWC (Flax); the model is NCHW, so inputs are permuted in and outputs permuted back.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dalle_flow.models.vqgan.config import VQGANConfig
from dalle_flow.models.vqgan.loader import (CHECKPOINT_NAME, CONFIG_NAME, build_empty, flax_layout, load_state,
                                            load_vqgan)
from dalle_flow.models.vqgan.model import VQGAN, postprocess
from dalle_flow.parity.compare import (CaseResult, compare_arrays, compare_exact, compare_state_shapes, load_npz,
                                       read_manifest)


def _nchw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float()


def _nhwc(tensor: torch.Tensor) -> np.ndarray:
    return tensor.permute(0, 2, 3, 1).float().cpu().numpy()


def _decode_code(model: VQGAN, inputs: dict) -> dict:
    return {"images": _nhwc(model.decode_code(torch.from_numpy(inputs["indices"]).long()))}


def _decode_code_postprocess(model: VQGAN, inputs: dict) -> dict:
    return {"images_uint8": postprocess(model.decode_code(torch.from_numpy(inputs["indices"]).long()))}


def _encode(model: VQGAN, inputs: dict) -> dict:
    pixels = _nchw(inputs["pixel_values"])
    z_e = model.pre_quant(pixels)
    quant, ids = model.quantize(z_e)
    return {"z_e": _nhwc(z_e), "quant_states": _nhwc(quant), "indices": ids.cpu().numpy()}


def _decode(model: VQGAN, inputs: dict) -> dict:
    return {"images": _nhwc(model.decode(_nchw(inputs["latents"])))}


def _forward(model: VQGAN, inputs: dict) -> dict:
    images, ids = model(_nchw(inputs["pixel_values"]))
    return {"images": _nhwc(images), "indices": ids.cpu().numpy()}


CASES = {"decode_code": _decode_code, "decode_code_postprocess": _decode_code_postprocess, "encode": _encode,
         "decode": _decode, "forward": _forward}


def run_case(model: VQGAN, folder: Path, case: dict) -> list[CaseResult]:
    name = case["name"]
    if name not in CASES:
        return [CaseResult(name, False, float("inf"), f"unknown case; known: {sorted(CASES)}")]
    inputs = load_npz(folder / case["inputs"])
    expected = load_npz(folder / case["expected"])
    with torch.inference_mode():
        outputs = CASES[name](model, inputs)
    exact = set(case.get("exact", []))
    results = []
    for key, want in expected.items():
        label = f"{name}/{key}"
        if key not in outputs:
            results.append(CaseResult(label, False, float("inf"), f"not produced (have {sorted(outputs)})"))
        elif key in exact:
            results.append(compare_exact(label, outputs[key], want))
        else:
            results.append(compare_arrays(label, outputs[key], want, case["atol"], case["rtol"]))
    return results


def full_size_case(manifest: dict) -> CaseResult:
    """Build the real-size model on the meta device from the manifest's config and compare its Flax layout."""
    config = VQGANConfig.from_dict(manifest["config"])
    model = build_empty(config, device="meta")
    shapes = {key: shape for key, (_, shape) in flax_layout(model).items()}
    result = compare_state_shapes("manifest_full", shapes, manifest["tensors"])
    if result.ok and "num_params" in manifest:
        count = sum(p.numel() for p in model.parameters())
        if count != manifest["num_params"]:
            return CaseResult("manifest_full", False, float(abs(count - manifest["num_params"])),
                              f"{count} parameters != manifest {manifest['num_params']}")
    return result


def run_fixture(folder: Path, spec: dict) -> list[CaseResult]:
    folder = Path(folder)
    config_path = folder / spec.get("checkpoint_config", CONFIG_NAME)
    checkpoint = folder / spec.get("checkpoint", CHECKPOINT_NAME)
    if config_path.is_file():
        model = load_vqgan((config_path, checkpoint), "cpu", torch.float32)
    else:  # a folder without the HF config.json: fixture.json's config is in the same terms
        model = build_empty(VQGANConfig.from_dict(spec["config"]), "cpu", torch.float32)
        load_state(model, checkpoint)
        model.eval()
    results = []
    for case in spec["cases"]:
        results.extend(run_case(model, folder, case))
    manifest = read_manifest(folder)
    if manifest is not None:
        results.append(full_size_case(manifest))
    return results
