"""Parity of the GLID-3 XL UNet, guidance and PLMS sampler against a `glid3_xl_latent_unet*` fixture folder.

Everything is read from the folder: the model configuration (fixture.json `config`, reference terms), the checkpoint,
each case's inputs, tolerances and keys to compare. Cases are recognised by their inputs (`x` -> UNet forward,
`x_t` -> guidance function, `noise` -> full PLMS run), so renamed or extra cases of the same kinds also run.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dalle_flow.models.glid3.guidance import guided_model_fn
from dalle_flow.models.glid3.plms import PlmsSampler, initial_latents
from dalle_flow.models.glid3.schedule import SpacedSchedule
from dalle_flow.models.glid3.config import UNetConfig
from dalle_flow.models.glid3.loader import build_unet, unet_from_state_dict
from dalle_flow.models.glid3.unet import UNet
from dalle_flow.parity.compare import (CaseResult, compare_arrays, compare_exact, compare_state_shapes, load_npz,
                                       read_manifest)

CLIP_KEYS = ("clip_proj.weight", "clip_proj.bias")


def run_fixture(folder: Path, spec: dict) -> list[CaseResult]:
    folder = Path(folder)
    config = UNetConfig.from_reference(spec["config"])
    state_dict = torch.load(folder / spec["checkpoint"], map_location="cpu", weights_only=True)
    schedule = SpacedSchedule.create(spec["config"].get("timestep_respacing") or spec["config"]["diffusion_steps"],
                                     int(spec["config"]["diffusion_steps"]), spec["config"]["noise_schedule"])
    models: dict[bool, UNet] = {}

    def model(with_clip: bool) -> UNet:
        if with_clip not in models:
            sd = state_dict if with_clip else {k: v for k, v in state_dict.items() if k not in CLIP_KEYS}
            models[with_clip] = unet_from_state_dict(sd, config)
        return models[with_clip]

    results = _schedule_cases(spec, schedule)
    for case in spec["cases"]:
        inputs = load_npz(folder / case["inputs"])
        expected = load_npz(folder / case["expected"])
        name = case["name"]
        with torch.no_grad():
            if "noise" in inputs:
                actual = _sample(model(True), schedule, inputs, spec)
            elif "x_t" in inputs:
                actual = _guidance(model(True), inputs, spec)
            elif "x" in inputs:
                noclip = "noclip" in name
                actual = _forward(model(not noclip), inputs, use_clip=not noclip)
            else:
                results.append(CaseResult(name, False, float("inf"), f"unrecognised inputs {sorted(inputs)}"))
                continue
        results += _compare(name, case, actual, expected)

    manifest = read_manifest(folder)
    if manifest is not None:
        results += _manifest_cases(manifest)
    return results


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a))


def _forward(unet: UNet, inputs: dict, use_clip: bool) -> dict:
    clip = _t(inputs["clip_embed"]) if use_clip and unet.config.clip_embed_dim is not None else None
    out = unet(_t(inputs["x"]), _t(inputs["timesteps"]), _t(inputs["context"]), clip_embed=clip)
    return {"out": out}


def _scale(inputs: dict, spec: dict) -> float:
    if "guidance_scale" in inputs:
        return float(inputs["guidance_scale"])
    return float(spec["sampler"]["guidance_scale"])


def _guidance(unet: UNet, inputs: dict, spec: dict) -> dict:
    clip = _t(inputs["clip_embed"]) if unet.config.clip_embed_dim is not None else None
    fn = guided_model_fn(unet, _t(inputs["context"]), _scale(inputs, spec), clip_embed=clip)
    return {"out": fn(_t(inputs["x_t"]), _t(inputs["timesteps"]))}


def _sample(unet: UNet, schedule: SpacedSchedule, inputs: dict, spec: dict) -> dict:
    noise = _t(inputs["noise"])
    b = int(inputs["batch_size"]) if "batch_size" in inputs else noise.shape[0] // 2
    context = torch.cat([_t(inputs["text_emb"]).repeat(b, 1, 1), _t(inputs["blank_bert"]).repeat(b, 1, 1)])
    clip = None
    if unet.config.clip_embed_dim is not None:
        cond = _t(inputs["clip_cond"]).reshape(1, -1)
        blank = _t(inputs["blank_clip"]).reshape(1, -1)
        clip = torch.cat([cond.repeat(b, 1), blank.repeat(b, 1)])
    guided = guided_model_fn(unet, context, _scale(inputs, spec), clip_embed=clip)
    calls = []

    def model_fn(x, ts):
        calls.append(float(ts[0]))
        return guided(x, ts)

    init = _t(inputs["init_latent"]) if "init_latent" in inputs else None
    x_t, start = initial_latents(schedule, noise, init, int(inputs.get("skip_timesteps", 0)))
    steps = list(PlmsSampler(schedule).steps(model_fn, x_t, start))
    scale = float(spec["sampler"].get("latent_scale_factor", 0.18215))
    return {
        "x_T": x_t,
        "step_t": np.array([s.index for s in steps], dtype=np.int64),
        "model_call_timesteps": np.array(calls, dtype=np.float32),
        "step_sample": torch.stack([s.sample for s in steps]),
        "pred_xstart": steps[-1].pred_xstart,
        "sample": steps[-1].sample,
        "latent_for_vae": steps[-1].pred_xstart[:b] / scale,
    }


def _compare(name: str, case: dict, actual: dict, expected: dict) -> list[CaseResult]:
    keys = case.get("compare") or sorted(expected)
    out = []
    for key in keys:
        label = f"{name}.{key}"
        if key not in actual or key not in expected:
            out.append(CaseResult(label, False, float("inf"), "missing in " + ("output" if key not in actual
                                                                                else "expected file")))
        elif np.issubdtype(np.asarray(expected[key]).dtype, np.integer):
            out.append(compare_exact(label, actual[key], expected[key]))
        else:
            out.append(compare_arrays(label, actual[key], expected[key], case["atol"], case["rtol"]))
    return out


def _schedule_cases(spec: dict, schedule: SpacedSchedule) -> list[CaseResult]:
    """The respacing facts fixture.json states: timestep maps and spaced alphas."""
    results = []
    sampler = spec.get("sampler", {})
    if "timestep_map" in sampler:
        results.append(compare_exact("schedule.timestep_map", schedule.timestep_map,
                                     np.array(sampler["timestep_map"], dtype=np.int64)))
    if "alphas_cumprod_spaced" in sampler:
        results.append(compare_arrays("schedule.alphas_cumprod", schedule.alphas_cumprod,
                                      np.array(sampler["alphas_cumprod_spaced"]), atol=1e-12, rtol=1e-12))
    defaults = spec.get("dalle_flow_defaults", {})
    if "timestep_map_100" in defaults:
        steps = int(defaults.get("steps", 100))
        spaced = SpacedSchedule.create(steps, int(spec["config"]["diffusion_steps"]), spec["config"]["noise_schedule"])
        results.append(compare_exact(f"schedule.timestep_map_{steps}", spaced.timestep_map,
                                     np.array(defaults["timestep_map_100"], dtype=np.int64)))
    return results


def _manifest_cases(manifest: dict) -> list[CaseResult]:
    """Full-size UNet on the meta device, once as the file is and once with its optional tensors (clip_proj)."""
    base = UNetConfig.from_reference(manifest["config"])
    results = []
    variants = [("manifest_full", manifest["tensors"])]
    if manifest.get("optional_tensors"):
        variants.append(("manifest_full+optional", {**manifest["tensors"], **manifest["optional_tensors"]}))
    for name, tensors in variants:
        # decide the checkpoint-dependent settings from the key set exactly as a real load does
        fake = {k: torch.empty(shape, device="meta") for k, shape in tensors.items()}
        model = build_unet(base.for_state_dict(fake), device="meta")
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        results.append(compare_state_shapes(name, shapes, tensors))
    return results
