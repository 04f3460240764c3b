"""Load (and save) DalleBart in the released Flax layout (`load_dallebart`, `save_dallebart`), or build the tiny random
one (`tiny_dallebart`). The released layout is: `config.json` + `flax_model.msgpack`.

File layout (what `FlaxPreTrainedModel.save_pretrained` writes for dalle-mini's DalleBart, DALL·E Mega included):
- top keys `model` and `lm_head` (a leading `params` level, as in some training checkpoints, is accepted too);
- layers are scanned: one key per weight with a leading layer axis, e.g.
  `model/encoder/layers/FlaxBartEncoderLayers/FlaxBartAttention_0/q_proj/kernel` [L, in, out]. The unscanned
  spelling `FlaxBartEncoderLayer_<i>` (dalle-mini's `unscan()`) is accepted as well;
- Dense `kernel` is [in, out] (kept in that layout by attention.Dense, so no transposes); `embedding` is
  [rows, d_model]; LayerNorm `scale` is our `weight`, and several layer norms store only `bias` (attention.LayerNorm).

Loading builds the model on the `meta` device, allocates it once in the target dtype, then streams tensors from the
memory-mapped file straight into the parameters (converting dtype on the fly), so host memory peaks near one copy of
the model plus one tensor. Loading is strict: every tensor of the file must be used and every parameter filled.
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from dalle_flow.runtime.flax_msgpack import iter_leaves
from dalle_flow.runtime.flax_msgpack_writer import write_flax_msgpack
from dalle_flow.runtime.state_dict import CheckpointMismatchError
from dalle_flow.models.dallebart.attention import Dense
from dalle_flow.models.dallebart.config import DalleBartConfig, tiny_config
from dalle_flow.models.dallebart.model import DalleBart

CONFIG_NAME = "config.json"
CHECKPOINT_NAME = "flax_model.msgpack"

# module names inside a layer: ours -> flax's auto-numbered ones
_LAYER_PARTS = {
    "pre_self_attn_ln": "LayerNorm_0",
    "self_attn": "FlaxBartAttention_0",
    "self_attn_ln": "LayerNorm_1",
    "pre_cross_attn_ln": "LayerNorm_2",
    "cross_attn": "FlaxBartAttention_1",
    "cross_attn_ln": "LayerNorm_3",
    "glu.ln_in": "GLU_0/LayerNorm_0",
    "glu.fc_gelu": "GLU_0/Dense_0",
    "glu.fc_gate": "GLU_0/Dense_1",
    "glu.ln_mid": "GLU_0/LayerNorm_1",
    "glu.fc_out": "GLU_0/Dense_2",
}
_SCANNED = {"encoder": "FlaxBartEncoderLayers", "decoder": "FlaxBartDecoderLayers"}
_UNSCANNED = re.compile(r"/(FlaxBart(?:Encoder|Decoder)Layer)_(\d+)/")


def _leaf_name(module_path: str, leaf: str, module: torch.nn.Module) -> str:
    if isinstance(module, Dense):
        return f"{module_path}/kernel"
    if isinstance(module, torch.nn.Embedding):
        return f"{module_path}/embedding"
    return f"{module_path}/{'scale' if leaf == 'weight' else 'bias'}"


def _layer_part(inner: str) -> str:
    """'self_attn.q_proj' -> 'FlaxBartAttention_0/q_proj' (longest known prefix, rest kept)."""
    for ours in sorted(_LAYER_PARTS, key=len, reverse=True):
        if inner == ours or inner.startswith(ours + "."):
            return "/".join([_LAYER_PARTS[ours]] + inner[len(ours):].split(".")[1:])
    raise KeyError(f"no flax name for layer module {inner!r}")


def flax_slots(model: DalleBart) -> dict[str, list[tuple[int | None, str]]]:
    """flax key (scanned layout) -> [(layer index or None, our parameter name)], one entry per layer."""
    modules = dict(model.named_modules())
    slots: dict[str, list] = {}
    for name, _ in model.named_parameters():
        module_name, leaf = name.rsplit(".", 1)
        module = modules[module_name]
        parts = module_name.split(".")
        if parts[0] == "lm_head":
            slots.setdefault(_leaf_name("lm_head", leaf, module), []).append((None, name))
            continue
        stack = parts[0]  # encoder | decoder
        if parts[1] == "layers":
            layer, inner = int(parts[2]), ".".join(parts[3:])
            prefix = f"model/{stack}/layers/{_SCANNED[stack]}/{_layer_part(inner)}"
            slots.setdefault(_leaf_name(prefix, leaf, module), []).append((layer, name))
        else:
            key = _leaf_name(f"model/{stack}/{'/'.join(parts[1:])}", leaf, module)
            slots.setdefault(key, []).append((None, name))
    return slots


def flax_shapes(model: DalleBart) -> dict[str, tuple[int, ...]]:
    """Every tensor of the released file layout with its shape, derived from the model (works on `meta`)."""
    params = dict(model.named_parameters())
    shapes = {}
    for key, entries in flax_slots(model).items():
        layer, name = entries[0]
        shape = tuple(params[name].shape)
        shapes[key] = shape if layer is None else (len(entries),) + shape
    return shapes


def _normalize_key(path: tuple[str, ...]) -> tuple[str, int | None]:
    """File key -> (scanned-layout key, layer index if the file stores that layer on its own)."""
    key = "/".join(path[1:] if path and path[0] == "params" else path)
    match = _UNSCANNED.search(key)
    if match is None:
        return key, None
    return key[:match.start()] + f"/{match.group(1)}s/" + key[match.end():], int(match.group(2))


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    # the view is read-only (mmap); torch only reads it, so the not-writable warning does not apply
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


@torch.no_grad()
def load_flax_weights_(model: DalleBart, checkpoint) -> DalleBart:
    """Copy every tensor of a Flax msgpack checkpoint into `model` in place (strict)."""
    slots = flax_slots(model)
    params = dict(model.named_parameters())
    filled: set[tuple[str, int | None]] = set()
    unexpected, wrong_shape = [], []
    for path, array in iter_leaves(checkpoint):
        key, layer = _normalize_key(path)
        entries = slots.get(key)
        if entries is None:
            unexpected.append("/".join(path))
            continue
        if layer is not None:  # one layer of an unscanned file
            entries = [e for e in entries if e[0] == layer]
            if not entries:
                unexpected.append("/".join(path))
                continue
        layered = entries[0][0] is not None and layer is None
        expected = tuple(params[entries[0][1]].shape)
        expected = (len(entries),) + expected if layered else expected
        if tuple(array.shape) != expected:
            wrong_shape.append(f"{'/'.join(path)}: file {tuple(array.shape)} != model {expected}")
            continue
        if not np.issubdtype(array.dtype, np.floating):
            wrong_shape.append(f"{'/'.join(path)}: dtype {array.dtype} is not floating point")
            continue
        source = _as_tensor(array)
        for entry_layer, name in entries:
            params[name].copy_(source[entry_layer] if layered else source)
            filled.add((key, entry_layer))
        del source, array  # the reader releases this tensor's pages when we advance
    missing = [f"{key}" + ("" if layer is None else f" (layer {layer})")
               for key, entries in slots.items() for layer, _ in entries if (key, layer) not in filled]
    if unexpected or missing or wrong_shape:
        problems = []
        for label, items in (("unexpected tensors in the file", unexpected),
                             ("model tensors missing from the file", missing), ("mismatches", wrong_shape)):
            if items:
                problems.append(f"{label} ({len(items)}): " + "; ".join(items[:8]) + (" ..." if len(items) > 8 else ""))
        raise CheckpointMismatchError(f"{checkpoint}: checkpoint does not fit the DalleBart config:\n  "
                                      + "\n  ".join(problems))
    return model


def resolve_paths(folder_or_paths) -> tuple[Path, Path]:
    """A folder holding config.json + flax_model.msgpack, or an explicit (config, checkpoint) pair."""
    if isinstance(folder_or_paths, (tuple, list)):
        config_path, checkpoint = (Path(p) for p in folder_or_paths)
    else:
        folder = Path(folder_or_paths)
        config_path, checkpoint = folder / CONFIG_NAME, folder / CHECKPOINT_NAME
    for path in (config_path, checkpoint):
        if not path.is_file():
            raise FileNotFoundError(f"DalleBart file not found: {path}")
    return config_path, checkpoint


def build_empty(config: DalleBartConfig, device, dtype: torch.dtype) -> DalleBart:
    """The model allocated once on `device` in `dtype`, values uninitialised (nothing is computed on the CPU)."""
    with torch.device("meta"):
        model = DalleBart(config).to(dtype)
    return model.to_empty(device=device)


def load_dallebart(folder_or_paths, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32) -> DalleBart:
    """Load a released (or saved) DalleBart in eval mode, without gradients. The file may be float16 or float32;
    tensors are converted to `dtype` while copying."""
    config_path, checkpoint = resolve_paths(folder_or_paths)
    config = DalleBartConfig.from_json(config_path)
    model = build_empty(config, device, dtype)
    load_flax_weights_(model, checkpoint)
    return model.eval().requires_grad_(False)


def save_dallebart(model: DalleBart, folder, dtype=np.float32) -> Path:
    """Write config.json + flax_model.msgpack in the released (scanned) layout. Tensors are converted one at a time."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / CONFIG_NAME, "w") as f:
        json.dump(model.config.to_dict(), f, indent=2, sort_keys=True)
    params = dict(model.named_parameters())

    def producer(entries):
        def make():
            pieces = [params[name].detach().float().cpu() for _, name in entries]
            stacked = torch.stack(pieces) if entries[0][0] is not None else pieces[0]
            return stacked.contiguous().numpy().astype(dtype)
        return make

    items = [(tuple(key.split("/")), producer(entries)) for key, entries in flax_slots(model).items()]
    return write_flax_msgpack(folder / CHECKPOINT_NAME, items)


@torch.no_grad()
def randomize_(model: DalleBart, seed: int = 0) -> DalleBart:
    """Deterministic random weights from a private generator (the global torch RNG is left alone). Every tensor is
    random, layer-norm scales and biases included, so each one influences the output."""
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
        if name.endswith(".bias"):  # layer-norm shifts
            value = 0.1 * noise
        elif param.ndim == 1:  # layer-norm scales
            value = 1.0 + 0.1 * noise
        elif "embed" in name:
            value = noise
        else:  # [in, out] kernels: unit-variance outputs for unit-variance inputs
            value = noise / param.shape[0] ** 0.5
        param.copy_(value)
    return model


def tiny_dallebart(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0,
                   **config_overrides) -> DalleBart:
    """The tiny preset's DalleBart: d_model 64, 2+2 layers, 256 image tokens over a 64-code codebook (the tiny VQGAN's),
    real special-id conventions, deterministic random weights."""
    model = DalleBart(tiny_config(**config_overrides))
    return randomize_(model, seed).to(device=device, dtype=dtype).eval().requires_grad_(False)
