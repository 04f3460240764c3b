"""Load (and write) the VQGAN in the vqgan-jax / HF Flax layout: a folder with `config.json` + `flax_model.msgpack`.

Flax paths are the taming-transformers names with `.N` written `_N` (`decoder/up_3/block_0/conv1/kernel`); the
mid block's `block_1` / `attn_1` are attribute names in both layouts. Leaves: conv `kernel` (kh, kw, in, out) ->
weight (out, in, kh, kw), `bias`; GroupNorm `scale` / `bias`; codebook `quantize/embedding/embedding`, already
(n_embed, embed_dim). Loading streams one tensor at a time into a model built on the meta device, and is strict:
every file tensor must find a parameter of the right shape and every parameter must be filled.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dalle_flow.runtime import flax_msgpack
from dalle_flow.runtime.flax_msgpack_writer import write_flax_msgpack
from dalle_flow.runtime.state_dict import CheckpointMismatchError
from dalle_flow.models.vqgan.config import VQGANConfig, tiny_config
from dalle_flow.models.vqgan.model import ENCODER_MODULES, VQGAN

CONFIG_NAME = "config.json"
CHECKPOINT_NAME = "flax_model.msgpack"
_INDEXED = re.compile(r"^(down|up|block|attn)$")


def flax_key(torch_key: str, module: nn.Module) -> str:
    """'decoder.up.3.block.0.conv1.weight' -> 'decoder/up_3/block_0/conv1/kernel' (`module` owns the tensor)."""
    parts = torch_key.split(".")
    out = []
    i = 0
    while i < len(parts) - 1:
        if _INDEXED.match(parts[i]) and parts[i + 1].isdigit():
            out.append(f"{parts[i]}_{parts[i + 1]}")
            i += 2
        else:
            out.append(parts[i])
            i += 1
    leaf = parts[-1]
    if isinstance(module, nn.Embedding):
        leaf = "embedding"
    elif leaf == "weight":
        leaf = "scale" if isinstance(module, nn.GroupNorm) else "kernel"
    return "/".join(out + [leaf])


def flax_layout(model: VQGAN) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Flax path -> (torch parameter name, shape as stored in the Flax file), for every parameter of `model`."""
    layout = {}
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            torch_key = f"{module_name}.{name}" if module_name else name
            shape = tuple(param.shape)
            if isinstance(module, nn.Conv2d) and name == "weight":
                shape = (shape[2], shape[3], shape[1], shape[0])  # OIHW -> HWIO
            layout[flax_key(torch_key, module)] = (torch_key, shape)
    return layout


def _to_torch_layout(array: np.ndarray, torch_shape: tuple) -> np.ndarray:
    if len(torch_shape) == 4:
        return array.transpose(3, 2, 0, 1)  # HWIO -> OIHW
    return array.reshape(torch_shape)  # GroupNorm scale/bias may be (1, 1, 1, C) in old Flax exports


def load_state(model: VQGAN, checkpoint) -> None:
    """Fill every parameter of `model` (possibly created with to_empty) from a Flax msgpack file, strictly. A model
    built without its encoder skips the file's encoder tensors."""
    layout = flax_layout(model)
    params = dict(model.named_parameters())
    skipped = () if model.with_encoder else tuple(f"{name}/" for name in ENCODER_MODULES)
    filled, unexpected, wrong = set(), [], []
    for path, array in flax_msgpack.iter_leaves(checkpoint):
        key = "/".join(path)
        if skipped and key.startswith(skipped):
            continue
        if key not in layout:
            unexpected.append(key)
            continue
        torch_key, flax_shape = layout[key]
        param = params[torch_key]
        shape = tuple(array.shape)
        is_norm_vector = key.endswith(("/scale", "/bias")) and param.dim() == 1 and array.size == param.numel()
        if shape != flax_shape and not is_norm_vector:
            wrong.append(f"{key}: file {shape} != model {flax_shape}")
            continue
        if key in filled:
            wrong.append(f"{key}: stored twice")
            continue
        value = torch.from_numpy(np.array(_to_torch_layout(array, tuple(param.shape))))  # copy off the mapping
        with torch.no_grad():
            param.copy_(value)
        filled.add(key)
    missing = sorted(set(layout) - filled)
    if unexpected or missing or wrong:
        raise CheckpointMismatchError(
            f"{checkpoint}: does not match the VQGAN built from its config: "
            + "; ".join(f"{label} {len(items)}: {', '.join(items[:8])}{' ...' if len(items) > 8 else ''}"
                        for label, items in (("missing", missing), ("unexpected", unexpected),
                                             ("wrong shape", wrong)) if items))


def build_empty(config: VQGANConfig, device="cpu", dtype: torch.dtype = torch.float32,
                with_encoder: bool = True) -> VQGAN:
    """The model with uninitialised storage (no random init cost); every parameter must be loaded afterwards."""
    with torch.device("meta"):
        model = VQGAN(config, with_encoder)
    return model.to(dtype=dtype).to_empty(device=torch.device(device))


def load_vqgan(folder_or_paths, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
               with_encoder: bool = True) -> VQGAN:
    """The VQGAN from a folder holding `config.json` + `flax_model.msgpack` (the layout of HF
    dalle-mini/vqgan_imagenet_f16_16384) or an explicit (config, checkpoint) pair, in eval mode on `device`.
    DALL·E Flow keeps it in float32 even when DalleBart runs in half precision. `with_encoder=False` loads the
    decoding half only (what serving uses)."""
    if isinstance(folder_or_paths, (tuple, list)):
        config_path, checkpoint = (Path(p) for p in folder_or_paths)
    else:
        config_path, checkpoint = Path(folder_or_paths) / CONFIG_NAME, Path(folder_or_paths) / CHECKPOINT_NAME
    for path in (config_path, checkpoint):
        if not path.is_file():
            raise FileNotFoundError(f"VQGAN: {path} not found (expected config.json + flax_model.msgpack "
                                    f"from dalle-mini/vqgan_imagenet_f16_16384)")
    model = build_empty(VQGANConfig.from_json(config_path), device, dtype, with_encoder)
    load_state(model, checkpoint)
    return model.eval()


def save_vqgan(model: VQGAN, folder) -> Path:
    """Write `model` as vqgan-jax's save_pretrained would: config.json + flax_model.msgpack (float32, HWIO kernels).
    Used to make tiny checkpoints in the real format."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    params = dict(model.named_parameters())
    tensors = {}
    for key, (torch_key, _) in flax_layout(model).items():
        array = params[torch_key].detach().float().cpu().numpy()
        tensors[key] = array.transpose(2, 3, 1, 0) if array.ndim == 4 else array  # OIHW -> HWIO
    write_flax_msgpack(folder / CHECKPOINT_NAME, ((tuple(k.split("/")), v) for k, v in tensors.items()))
    config = {"architectures": ["del"], **model.config.to_dict()}  # the class-name quirk of the real config.json
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return folder


TINY_SEED = 20220521


def tiny_vqgan(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, seed: int = TINY_SEED,
               n_embed: int = 64) -> VQGAN:
    """A small VQGAN with deterministic random weights (no files), for tests and the tiny server preset."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VQGAN(tiny_config(n_embed))
        # random GroupNorm affines so that no parameter keeps a trivial value; centre the output near mid-grey so
        # tiny images are not clipped to black
        for module in model.modules():
            if isinstance(module, nn.GroupNorm):
                nn.init.normal_(module.weight, 1.0, 0.1)
                nn.init.normal_(module.bias, 0.0, 0.1)
        nn.init.constant_(model.decoder.conv_out.bias, 0.5)
    return model.to(device=device, dtype=dtype).eval()
