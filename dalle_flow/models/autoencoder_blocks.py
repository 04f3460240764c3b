"""The convolutional autoencoder of taming-transformers / latent-diffusion (`diffusionmodules/model.py`, and the
frame of `VQModel` / `AutoencoderKL` around it).

The VQGAN (vqgan/) and the LDM KL-f8 first stage (glid3/kl_vae.py) were trained with the same reference code, so they
share these modules; only their configs and what sits between encoder and decoder (codebook vs Gaussian posterior)
differ. Module and attribute names are the reference's (`down.{i}.block.{j}`, `mid.attn_1.q`, `nin_shortcut`,
`up.{i}.upsample.conv`, ...): a KL state_dict loads without renaming and the VQGAN loader maps the Flax paths onto them.
NCHW throughout; built for inference (dropout is the identity in eval mode).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    # both checkpoints were trained with 32 groups and eps 1e-6 (torch's default 1e-5 changes the VQGAN's argmin)
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """norm-swish-conv twice plus a residual; the 1x1 `nin_shortcut` exists only when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the h*w positions, with 1x1 convs for q, k, v and the output projection."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        normed = self.norm(x)
        # (b, c, h, w) -> (b, 1, h*w, c): head width = c, so SDPA's default scale is the reference's c**-0.5
        q, k, v = (proj(normed).reshape(b, 1, c, h * w).transpose(2, 3) for proj in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(2, 3).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Upsample(nn.Module):
    """Nearest x2 (jax.image.resize 'nearest' at an exact factor 2 repeats each pixel too), then an optional 3x3 conv
    (`resamp_with_conv`; the released VQGAN and kl-f8 both have it)."""

    def __init__(self, channels: int, with_conv: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.conv is not None else x


class Downsample(nn.Module):
    """Halve the resolution: pad one pixel at the bottom and right only (asymmetric, as trained; torch's conv padding
    is symmetric), 3x3 stride-2 conv; without a conv, a 2x2 average pool."""

    def __init__(self, channels: int, with_conv: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is None:
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class MidBlock(nn.Module):
    """ResnetBlock, attention, ResnetBlock at the lowest resolution (present in every config)."""

    def __init__(self, channels: int, dropout: float = 0.0):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


_RESAMPLERS = {"downsample": Downsample, "upsample": Upsample}


class Level(nn.Module):
    """One resolution level: resnet blocks, each followed by attention where the level has it, then an optional
    resampler registered as `downsample` (encoder) or `upsample` (decoder), the names the checkpoints use."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, with_attn: bool, resample: str | None,
                 resamp_with_conv: bool = True, dropout: float = 0.0):
        super().__init__()
        if resample is not None and resample not in _RESAMPLERS:
            raise ValueError(f"resample must be 'downsample', 'upsample' or None, got {resample!r}")
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()
        width = in_channels
        for _ in range(num_blocks):
            self.block.append(ResnetBlock(width, out_channels, dropout))
            width = out_channels
            if with_attn:
                self.attn.append(AttnBlock(width))
        self.resample = resample
        if resample is not None:
            # with zero blocks the width never changed, and the reference sizes the resampler on what came in
            self.add_module(resample, _RESAMPLERS[resample](width, resamp_with_conv))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ResnetBlock j, then attention j (the order vqgan-jax fixed in July 2022, and ldm's)
        for j, block in enumerate(self.block):
            x = block(x)
            if len(self.attn):
                x = self.attn[j](x)
        return x if self.resample is None else getattr(self, self.resample)(x)


class Encoder(nn.Module):
    """(N, in_channels, H, W) -> (N, z_channels [x2 if double_z], H/f, W/f), f = 2**(levels-1): every level but the
    last halves H and W. `attn_levels` are level indices (0 = full resolution) with attention blocks."""

    def __init__(self, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, in_channels: int, z_channels: int,
                 double_z: bool, attn_levels: tuple[int, ...] = (), resamp_with_conv: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        width = ch
        for level, mult in enumerate(ch_mult):
            last = level == len(ch_mult) - 1
            self.down.append(Level(width, ch * mult, num_res_blocks, level in attn_levels,
                                   None if last else "downsample", resamp_with_conv, dropout))
            width = ch * mult
        self.mid = MidBlock(width, dropout)
        self.norm_out = group_norm(width)
        self.conv_out = nn.Conv2d(width, 2 * z_channels if double_z else z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for level in self.down:
            x = level(x)
        x = self.mid(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class Decoder(nn.Module):
    """(N, z_channels, h, w) -> (N, out_ch, h*f, w*f); each level has num_res_blocks + 1 blocks and all but level 0
    double H and W. `give_pre_end` returns the features before norm_out; `tanh_out` squashes the output (both off
    in the released models, whose images are unbounded floats)."""

    def __init__(self, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, out_ch: int, z_channels: int,
                 attn_levels: tuple[int, ...] = (), resamp_with_conv: bool = True, dropout: float = 0.0,
                 give_pre_end: bool = False, tanh_out: bool = False):
        super().__init__()
        self.give_pre_end = give_pre_end
        self.tanh_out = tanh_out
        width = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, width, 3, padding=1)
        self.mid = MidBlock(width, dropout)
        # `up[i]` is level i (up[0] = full resolution) but is built and run from the deepest level upwards, so the
        # parameters are created (and randomly initialised) in the reference's order
        levels = {}
        for level in reversed(range(len(ch_mult))):
            levels[level] = Level(width, ch * ch_mult[level], num_res_blocks + 1, level in attn_levels,
                                  None if level == 0 else "upsample", resamp_with_conv, dropout)
            width = ch * ch_mult[level]
        self.up = nn.ModuleList(levels[level] for level in range(len(ch_mult)))
        self.norm_out = group_norm(width)
        self.conv_out = nn.Conv2d(width, out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            x = level(x)
        if self.give_pre_end:
            return x
        x = self.conv_out(F.silu(self.norm_out(x)))
        return torch.tanh(x) if self.tanh_out else x


class LatentAutoencoder(nn.Module):
    """The frame taming's VQModel and ldm's AutoencoderKL share: subclasses build `encoder`, `decoder` and the 1x1
    `quant_conv` / `post_quant_conv` into and out of the latent space (a codebook or a Gaussian posterior sits
    between them); inputs are moved to the weights' device and dtype."""

    encoder: Encoder
    decoder: Decoder
    quant_conv: nn.Conv2d
    post_quant_conv: nn.Conv2d

    @property
    def dtype(self) -> torch.dtype:
        return self.post_quant_conv.weight.dtype  # present in a decode-only model too

    @property
    def device(self) -> torch.device:
        return self.post_quant_conv.weight.device

    def encode_latent(self, x: torch.Tensor) -> torch.Tensor:
        """quant_conv(encoder(x)): the latent before quantisation / the posterior's stacked moments."""
        return self.quant_conv(self.encoder(x.to(self.device, self.dtype)))

    def decode_latent(self, z: torch.Tensor) -> torch.Tensor:
        """decoder(post_quant_conv(z)), in the weights' dtype."""
        return self.decoder(self.post_quant_conv(z.to(self.device, self.dtype)))
