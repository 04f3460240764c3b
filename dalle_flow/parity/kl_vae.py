"""Parity of the KL-f8 autoencoder against `ldm_autoencoder_kl*` fixture folders (see tests/fixtures/parity/ldm/kl_vae*).

Everything comes from the folder: the checkpoint named in fixture.json (pickled module or state_dict), the config the
tensors imply, and each case's inputs. A case is recognised by its input names (`x` -> encode, `z` -> decode,
`latent` -> GLID-3 decode), so folders with other case names, sizes or seeds run too.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dalle_flow.models.glid3.config import KLConfig
from dalle_flow.models.glid3.loader import full_kl_f8_meta, kl_config_from_state_dict, load_kl_vae
from dalle_flow.models.glid3.kl_vae import SCALE_FACTOR, sample_posterior
from dalle_flow.parity.compare import CaseResult, compare_outputs, compare_state_shapes, load_npz, read_manifest


@torch.no_grad()
def _outputs(model, inputs: dict[str, np.ndarray], scale: float) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    if "x" in inputs:
        x = torch.from_numpy(inputs["x"]).float()
        moments = model.moments(x)
        mean, logvar = model.encode(x)
        out.update(moments=moments, mean=mean, mode=mean, logvar=logvar, std=torch.exp(0.5 * logvar))
        if "noise" in inputs:
            sample = sample_posterior(mean, logvar, noise=torch.from_numpy(inputs["noise"]).float())
            out.update(sample=sample, latent_scaled=sample * scale)
    if "z" in inputs:
        out["image"] = model.decode(torch.from_numpy(inputs["z"]).float())
    if "latent" in inputs:
        image = model.decode(torch.from_numpy(inputs["latent"]).float() / scale)
        out.update(image=image, image01=((image + 1) / 2).clamp(0, 1))
    return out


def run_fixture(folder: Path, spec: dict) -> list[CaseResult]:
    folder = Path(folder)
    model = load_kl_vae(folder / spec["checkpoint"])
    config = spec.get("config", {})
    scale = float(config.get("scale_factor_used_by_glid3", SCALE_FACTOR))
    results = []

    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if "state_dict_keys" in spec:
        results.append(compare_state_shapes("state_dict_keys", shapes, spec["state_dict_keys"]))
    if "ddconfig" in config:
        declared = KLConfig.from_reference(config["ddconfig"], config.get("embed_dim", config["ddconfig"]["z_channels"]))
        derived = kl_config_from_state_dict(model.state_dict())
        results.append(CaseResult("config_from_tensors", declared == derived, 0.0,
                                  "" if declared == derived else f"tensors give {derived}, fixture.json {declared}"))

    for case in spec["cases"]:
        inputs = load_npz(folder / case["inputs"])
        expected = load_npz(folder / case["expected"])
        got = _outputs(model, inputs, scale)
        results.append(compare_outputs(case["name"], got, expected, case["atol"], case["rtol"]))

    manifest = read_manifest(folder)
    if manifest is not None:
        cfg = manifest["config"]
        full = full_kl_f8_meta(KLConfig.from_reference(cfg["ddconfig"], cfg["embed_dim"]))
        full_shapes = {k: tuple(v.shape) for k, v in full.state_dict().items()}
        result = compare_state_shapes("manifest_full", full_shapes, manifest["tensors"])
        n_params = sum(v.numel() for v in full.state_dict().values())
        if "num_params" in manifest and n_params != manifest["num_params"]:
            result = CaseResult("manifest_full", False, 0.0, f"{n_params} params != {manifest['num_params']}")
        results.append(result)
    return results
