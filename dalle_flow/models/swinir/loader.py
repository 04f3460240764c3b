"""Loading SwinIR checkpoints strictly, reading their config off the tensors, and the tiny random model."""
from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from dalle_flow.runtime.state_dict import load_state_dict_strict
from dalle_flow.models.swinir.config import SwinIRConfig, tiny_config
from dalle_flow.models.swinir.network import SwinIR

WRAPPER_KEYS = ("params_ema", "params")  # the released GAN file uses params_ema; other SwinIR files use params
TINY_SEED = 20220605


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """The state dict inside a SwinIR .pth: under 'params_ema', else 'params', else the whole object."""
    obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    for key in WRAPPER_KEYS:
        if key in obj:
            obj = obj[key]
            break
    bad = sorted(k for k, v in obj.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise ValueError(f"{path}: not a SwinIR state dict (non-tensor entries {bad[:5]})")
    return dict(obj)


def derive_config(state: dict[str, torch.Tensor], **overrides) -> SwinIRConfig:
    """The SwinIRConfig a state dict was saved from, as far as its tensors tell.

    Read off the tensors: in_chans, embed_dim, depths, num_heads, window_size, mlp_ratio, qkv_bias, patch_norm, ape,
    resi_connection, upscale, num_feat and img_size (from the stored shifted-window masks: (img_size/window)^2 windows;
    square crops only). Not recoverable, so the released model's values are assumed unless overridden: img_range 1.0,
    patch_size 1, qk_scale None, rgb_mean. A file without any mask (all depths 1) is given img_size 64. A model
    trained with img_size <= window_size only shows its shrunken window (see blocks.effective_window): pass the
    config for such files.
    """
    def shape(key):
        if key not in state:
            raise ValueError(f"not a real-SR SwinIR state dict: no {key!r}")
        return tuple(state[key].shape)

    embed_dim, in_chans = shape("conv_first.weight")[:2]
    depths = []
    for layer in range(1 + max(int(m.group(1)) for k in state if (m := re.match(r"layers\.(\d+)\.", k)))):
        blocks = {int(m.group(1)) for k in state
                  if (m := re.match(rf"layers\.{layer}\.residual_group\.blocks\.(\d+)\.", k))}
        depths.append(len(blocks))
    first = "layers.0.residual_group.blocks.0."
    heads = [shape(f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table")[1]
             for i in range(len(depths))]
    window = math.isqrt(shape(first + "attn.relative_position_index")[0])
    masks = [v for k, v in state.items() if k.endswith(".attn_mask")]
    if masks:
        img_size = math.isqrt(masks[0].shape[0]) * window
    elif max(depths) > 1:  # shifted blocks without masks: the reference shrank the window to the whole crop
        img_size = window
    else:
        img_size = 64
    if "conv_up1.weight" not in state:
        raise ValueError("not a real-SR ('nearest+conv') SwinIR state dict: no 'conv_up1.weight'")
    values = dict(
        in_chans=in_chans, embed_dim=embed_dim, depths=tuple(depths), num_heads=tuple(heads), window_size=window,
        img_size=img_size, mlp_ratio=shape(first + "mlp.fc1.weight")[0] / embed_dim,
        qkv_bias=first + "attn.qkv.bias" in state, patch_norm="patch_embed.norm.weight" in state,
        ape="absolute_pos_embed" in state,
        resi_connection="3conv" if "conv_after_body.0.weight" in state else "1conv",
        upscale=4 if "conv_up2.weight" in state else 2, num_feat=shape("conv_up1.weight")[0])
    values.update(overrides)
    return SwinIRConfig(**values)


def build_swinir(config: SwinIRConfig | dict | None = None, device="cpu") -> SwinIR:
    """An untrained SwinIR; on device 'meta' it allocates nothing (for shape checks and fast loading)."""
    if isinstance(config, dict):
        config = SwinIRConfig.from_dict(config)
    with torch.device(device):
        return SwinIR(config or SwinIRConfig())


def load_swinir(path, config: SwinIRConfig | dict | None = None, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> SwinIR:
    """A SwinIR in eval mode with every tensor of `path` loaded (strict). The reference ran float32; half precision
    moves a few output values by one grey level.
    config None reads the structure off the file (see derive_config); for the released file that is the real-SR x4
    large model. The shifted-window masks and position indices in the file are loaded like the weights.
    """
    state = read_state_dict(path)
    if isinstance(config, dict):
        config = SwinIRConfig.from_dict(config)
    config = config or derive_config(state)
    model = build_swinir(config, device="meta")  # no time spent initialising weights that are overwritten
    load_state_dict_strict(model, state, str(path), assign=True)
    # The non-persistent mean is not in the file, so it is still on meta: rebuild it.
    model.rgb_mean = torch.tensor(config.rgb_mean if config.in_chans == 3 else (0.0,)).view(1, -1, 1, 1)
    return model.to(device=device, dtype=dtype).eval()


def tiny_swinir(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                seed: int = TINY_SEED) -> SwinIR:
    """A small SwinIR with deterministic random weights (no file): same seed, same weights, on any machine."""
    config = tiny_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SwinIR(config)
        model.reset_parameters()
    return model.to(device=device, dtype=dtype).eval()


def save_swinir(model: SwinIR, path, wrapper_key: str | None = "params_ema") -> None:
    """Write `model` as the released file is laid out: {'params_ema': state_dict}, buffers included."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save({wrapper_key: state} if wrapper_key else state, Path(path))
