"""Parity against `swinir_realsr*` fixture folders (see tests/fixtures/parity/swinir/README.md).

Everything comes from the folder: the config (fixture.json `config` plus its `fixed_constants`), the checkpoint, the
cases. A case whose inputs hold `image_rgb_uint8` runs the whole test-time pipeline and may check any of its stages
(`x`, `padded_input`, `model_output_padded`, `output_float`, `output_rgb_uint8`); any other case is a raw forward
`y = model(x)`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dalle_flow.models.swinir.loader import build_swinir, derive_config, load_swinir, read_state_dict
from dalle_flow.models.swinir.config import SwinIRConfig
from dalle_flow.pipelines.swinir import PAD_MULTIPLE, images_to_tensor, to_uint8, upscale, upscale_tensor
from dalle_flow.parity.compare import (CaseResult, compare_arrays, compare_exact, compare_state_shapes, load_npz,
                                       read_manifest)

# fixed_constants entries that are SwinIRConfig fields; the rest (norm_layer, pipeline_pad_window) are descriptive
# and checked against the code's constants below.
CONFIG_CONSTANTS = ("num_feat", "rgb_mean")


def config_from(spec: dict) -> SwinIRConfig:
    constants = spec.get("fixed_constants", {})
    return SwinIRConfig.from_dict({**spec["config"], **{k: constants[k] for k in CONFIG_CONSTANTS if k in constants}})


def run_fixture(folder: Path, spec: dict) -> list[CaseResult]:
    folder = Path(folder)
    config = config_from(spec)
    results = [_check_constants(spec)]
    path = folder / spec["checkpoint"]
    model = load_swinir(path, config)
    results.append(_check_derived_config(path, config))
    for case in spec["cases"]:
        results += _run_case(model, folder, case)
    manifest = read_manifest(folder)
    if manifest is not None:
        results.append(_check_manifest(manifest))
    return results


def _check_constants(spec: dict) -> CaseResult:
    pad = spec.get("fixed_constants", {}).get("pipeline_pad_window", PAD_MULTIPLE)
    ok = pad == PAD_MULTIPLE
    return CaseResult("constants", ok, 0.0, "" if ok else f"pipeline_pad_window {pad} != code's {PAD_MULTIPLE}")


def _check_derived_config(path: Path, config: SwinIRConfig) -> CaseResult:
    """The structure read off the checkpoint alone agrees with the folder's config (what load_swinir(path) uses)."""
    derived = derive_config(read_state_dict(path), img_range=config.img_range, patch_size=config.patch_size,
                            qk_scale=config.qk_scale, rgb_mean=config.rgb_mean, upsampler=config.upsampler)
    fields = [k for k in derived.to_dict() if k not in ("drop_rate", "attn_drop_rate", "drop_path_rate",
                                                        "use_checkpoint")]
    differ = [(k, getattr(derived, k), getattr(config, k)) for k in fields if getattr(derived, k) != getattr(config, k)]
    return CaseResult("config_from_checkpoint", not differ, 0.0, f"derived != folder: {differ}" if differ else "")


def _run_case(model, folder: Path, case: dict) -> list[CaseResult]:
    name = case["name"]
    inputs = load_npz(folder / case["inputs"])
    expected = load_npz(folder / case["expected"])
    if "image_rgb_uint8" in inputs:
        image = inputs["image_rgb_uint8"]
        x = images_to_tensor(image)
        outputs = {"x": x, **upscale_tensor(model, x)}
        outputs["output_rgb_uint8"] = upscale(model, image)
        checked_inputs = {"x": inputs["x"]} if "x" in inputs else {}
    else:
        with torch.inference_mode():
            outputs = {"y": model(torch.from_numpy(inputs["x"]))}
        checked_inputs = {}

    results = []
    # The pipeline's own image -> x conversion must give the folder's x bit for bit.
    for key, value in checked_inputs.items():
        results.append(compare_exact(f"{name}/{key}", outputs[key], value))
    for key, value in expected.items():
        label = f"{name}/{key}"
        if key not in outputs:
            results.append(CaseResult(label, False, float("inf"), f"no output named {key!r}"))
        elif key == case.get("uint8_key") or value.dtype == np.uint8:
            results.append(_compare_uint8(label, outputs[key], value, case))
        else:
            results.append(compare_arrays(label, outputs[key], value, case["atol"], case["rtol"]))
    if "image_rgb_uint8" in inputs and "output_rgb_uint8" in outputs:
        # upscale() must be exactly the stages above composed.
        composed = to_uint8(outputs["output_float"])[0]
        results.append(compare_exact(f"{name}/upscale_matches_stages", outputs["output_rgb_uint8"], composed))
    return results


def _compare_uint8(label: str, actual, expected: np.ndarray, case: dict) -> CaseResult:
    actual = np.asarray(actual)
    if actual.shape != expected.shape:
        return CaseResult(label, False, float("inf"), f"shape {actual.shape} != expected {expected.shape}")
    diff = np.abs(actual.astype(np.int32) - expected.astype(np.int32))
    atol = case.get("uint8_atol", 0)
    allowed = case.get("uint8_max_mismatch_fraction", 0.0)
    fraction = float(np.mean(diff != 0)) if diff.size else 0.0
    worst = int(diff.max()) if diff.size else 0
    ok = worst <= atol and fraction <= allowed
    return CaseResult(label, ok, float(worst), f"{int(np.sum(diff != 0))}/{diff.size} values differ "
                                               f"(allowed {allowed:.2%}, each by <= {atol})")


def _check_manifest(manifest: dict) -> CaseResult:
    """The full-size model, built on `meta` from the manifest's config, has exactly the real file's tensors."""
    spec = {"config": manifest["config"], "fixed_constants": manifest.get("fixed_constants", {})}
    model = build_swinir(config_from(spec), device="meta")
    state = model.state_dict()
    result = compare_state_shapes("manifest_full", {k: tuple(v.shape) for k, v in state.items()},
                                  manifest["tensors"])
    problems = []
    dtypes = manifest.get("dtypes", {})
    default = getattr(torch, dtypes.get("default", "float32"))
    special = {k: getattr(torch, name) for name, keys in dtypes.items() if name != "default" for k in keys}
    wrong = [k for k, v in state.items() if v.dtype != special.get(k, default)]
    if wrong:
        problems.append(f"wrong dtype {len(wrong)} (e.g. {wrong[:3]})")
    if "num_parameters" in manifest:
        count = sum(p.numel() for p in model.parameters())
        if count != manifest["num_parameters"]:
            problems.append(f"{count} parameters != {manifest['num_parameters']}")
    if not problems:
        return result
    return CaseResult(result.name, False, 0.0, "; ".join(([] if result.ok else [result.detail]) + problems))
