"""Parity of the DalleBart port against a `dallebart-*` fixture folder (see tests/fixtures/parity/dallebart/README.md).

Everything is derived from the folder: the config from its config.json, the weights from its flax_model.msgpack (and
fp16/ for the half-precision case), the sampling settings and noise from the case inputs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dalle_flow.parity.compare import (CaseResult, compare_arrays, compare_exact, compare_state_shapes, load_npz,
                                       read_manifest)
from dalle_flow.models.dallebart.config import DalleBartConfig
from dalle_flow.models.dallebart.loader import build_empty, flax_shapes, load_dallebart
from dalle_flow.models.dallebart.sampling import SamplingSettings, supercondition_sample

TEXT_CASES = ("processor", "text_normalizer", "text_normalizer_hashtags")


def _t(array) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array))


def _merge(name: str, results: list[CaseResult]) -> CaseResult:
    """One line per case: ok when every compared key is, reporting the worst error and the failing keys."""
    failed = [r for r in results if not r.ok]
    detail = "; ".join(f"{r.name}: {r.detail or 'out of tolerance'} (err {r.max_abs_err:.3g})" for r in failed)
    return CaseResult(name, not failed, max((r.max_abs_err for r in results), default=0.0), detail)


def _compare_all(case: dict, actual: dict, expected: dict) -> CaseResult:
    per_key = case.get("atol_per_key", {})
    results = []
    for key, value in expected.items():
        if key not in actual:
            results.append(CaseResult(key, False, float("inf"), "not produced"))
        elif np.issubdtype(value.dtype, np.integer):
            results.append(compare_exact(key, actual[key], value))
        else:
            results.append(_compare_with_inf(key, actual[key], value, per_key.get(key, case["atol"]), case["rtol"]))
    return _merge(case["name"], results)


def _compare_with_inf(name, actual, expected, atol, rtol) -> CaseResult:
    """Filtered logits hold -inf for removed ids: the -inf pattern must match exactly, finite values within atol."""
    actual = np.asarray(actual.detach().cpu().numpy() if hasattr(actual, "detach") else actual)
    if actual.shape != expected.shape:
        return CaseResult(name, False, float("inf"), f"shape {actual.shape} != expected {expected.shape}")
    removed_a, removed_e = np.isneginf(actual), np.isneginf(expected)
    if not np.array_equal(removed_a, removed_e):
        return CaseResult(name, False, float("inf"), f"{int((removed_a != removed_e).sum())} entries differ in -inf")
    keep = ~removed_e
    return compare_arrays(name, actual[keep], expected[keep], atol, rtol)


def _forward(model, inputs) -> dict:
    with torch.no_grad():
        logits, encoded = model(_t(inputs["input_ids"]), _t(inputs["attention_mask"]), _t(inputs["decoder_input_ids"]))
    return {"logits": logits, "encoder_last_hidden_state": encoded}


def _supercondition(model, inputs, case) -> dict:
    settings = case.get("settings", {})
    noise_all = _t(inputs["gumbel_noise"]).float()  # (steps, B, V)
    steps = int(settings.get("steps", noise_all.shape[0]))
    sampling = SamplingSettings(
        cond_scale=float(inputs["condition_scale"]) if "condition_scale" in inputs else settings["condition_scale"],
        top_k=int(inputs["top_k"]) if "top_k" in inputs else settings.get("top_k"),
        top_p=float(inputs["top_p"]) if "top_p" in inputs else settings.get("top_p"),
        temperature=float(inputs["temperature"]) if "temperature" in inputs else settings.get("temperature"),
    )
    record: dict = {}
    sequences = supercondition_sample(
        model, _t(inputs["input_ids"]), _t(inputs["attention_mask"]), _t(inputs["input_ids_uncond"]),
        _t(inputs["attention_mask_uncond"]), sampling, noise=lambda step, rows, vocab: noise_all[step],
        steps=steps, codebook_size=None, record=record)
    out = {name: torch.stack(values) for name, values in record.items()}
    out["sequences"] = sequences
    return out


def _text_cases(folder: Path, spec: dict, names: list[str]) -> list[CaseResult]:
    try:
        from dalle_flow.parity.dallebart_text import run_text_cases
    except ImportError as exc:
        return [CaseResult(name, False, float("inf"), f"text/processor parity unavailable: {exc}") for name in names]
    return run_text_cases(folder, spec, names)


def run_fixture(folder: Path, spec: dict) -> list[CaseResult]:
    folder = Path(folder)
    results: list[CaseResult] = []
    models: dict[str, torch.nn.Module] = {}

    def model_for(sub: str):
        if sub not in models:  # float32 compute whatever the file's dtype
            models[sub] = load_dallebart(folder / sub if sub else folder, device="cpu", dtype=torch.float32)
        return models[sub]

    text_names = [c["name"] for c in spec["cases"] if c["name"] in TEXT_CASES]
    for case in spec["cases"]:
        name = case["name"]
        if name in TEXT_CASES:
            continue
        try:
            inputs = load_npz(folder / case["inputs"])
            expected = load_npz(folder / case["expected"])
            if name == "encoder":
                with torch.no_grad():
                    actual = {"last_hidden_state": model_for("").encode(_t(inputs["input_ids"]),
                                                                        _t(inputs["attention_mask"]))}
            elif name == "forward":
                actual = _forward(model_for(""), inputs)
            elif name == "forward_fp16_checkpoint":
                actual = _forward(model_for("fp16"), inputs)
            elif name == "supercondition":
                actual = _supercondition(model_for(""), inputs, case)
            else:
                results.append(CaseResult(name, False, float("inf"), "unknown case for kind dallebart"))
                continue
            results.append(_compare_all(case, actual, expected))
        except Exception as exc:  # one broken case must not hide the others
            results.append(CaseResult(name, False, float("inf"), f"{type(exc).__name__}: {exc}"))
    if text_names:
        results.extend(_text_cases(folder, spec, text_names))

    manifest = read_manifest(folder)
    if manifest is not None:
        results.append(_manifest_case(manifest))
    return results


def _manifest_case(manifest: dict) -> CaseResult:
    """The full-size model built on `meta` from the manifest's config must have the released file's exact tensors."""
    try:
        model = build_empty(DalleBartConfig.from_dict(manifest["config"]), "meta", torch.float32)
    except Exception as exc:
        return CaseResult("manifest_full", False, float("inf"), f"{type(exc).__name__}: {exc}")
    result = compare_state_shapes("manifest_full", flax_shapes(model), manifest["tensors"])
    count = sum(p.numel() for p in model.parameters())
    if "num_params" in manifest and count != manifest["num_params"]:
        return CaseResult(result.name, False, result.max_abs_err,
                          f"{result.detail}; {count} parameters != manifest {manifest['num_params']}")
    result.detail += f", {count:,} parameters"
    return result
