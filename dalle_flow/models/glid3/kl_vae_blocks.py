"""Building blocks of the LDM KL autoencoder (CompVis latent-diffusion `diffusionmodules/model.py` layout).

Module and attribute names follow the checkpoint keys (`down.{i}.block.{j}`, `mid.attn_1.q`, `nin_shortcut`, ...)
so that a state_dict of the real kl-f8.pt loads without renaming.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    # eps 1e-6 (not torch's 1e-5) is what the checkpoint was trained with
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    """norm-swish-conv twice; the 1x1 `nin_shortcut` exists only when the channel count changes."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all h*w positions; q/k/v/proj_out are 1x1 convs (weights [C, C, 1, 1])."""

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
        # (b, c, h, w) -> (b, 1, h*w, c): one head whose width is the channel count, so SDPA's default scale C^-0.5
        q, k, v = (proj(normed).reshape(b, 1, c, h * w).transpose(2, 3) for proj in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(2, 3).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # asymmetric zero pad (right and bottom only): torch's conv padding is symmetric
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MidBlock(nn.Module):
    def __init__(self, channels: int, dropout: float):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Level(nn.Module):
    """One resolution level: resnet blocks, each optionally followed by attention, then an optional resampler.

    The resampler is registered as `downsample` (encoder) or `upsample` (decoder) to match the checkpoint keys.
    """

    def __init__(self, channels_in: int, channels_out: int, num_blocks: int, with_attn: bool, dropout: float,
                 resample: str | None):
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()
        for i in range(num_blocks):
            self.block.append(ResnetBlock(channels_in if i == 0 else channels_out, channels_out, dropout))
            if with_attn:
                self.attn.append(AttnBlock(channels_out))
        self.resample_name = resample
        if resample == "downsample":
            self.downsample = Downsample(channels_out)
        elif resample == "upsample":
            self.upsample = Upsample(channels_out)
        elif resample is not None:
            raise ValueError(f"resample must be 'downsample', 'upsample' or None, got {resample!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            x = block(x)
            if len(self.attn):
                x = self.attn[i](x)
        if self.resample_name is not None:
            x = getattr(self, self.resample_name)(x)
        return x


class Encoder(nn.Module):
    """(N, in_channels, H, W) -> (N, 2*z_channels, H/2^(L-1), W/2^(L-1)); every level but the last halves H and W."""

    def __init__(self, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, in_channels: int, z_channels: int,
                 double_z: bool = True, attn_levels: tuple[int, ...] = (), dropout: float = 0.0):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        channels = ch
        for level, mult in enumerate(ch_mult):
            last = level == len(ch_mult) - 1
            self.down.append(Level(channels, ch * mult, num_res_blocks, level in attn_levels, dropout,
                                   None if last else "downsample"))
            channels = ch * mult
        self.mid = MidBlock(channels, dropout)
        self.norm_out = group_norm(channels)
        self.conv_out = nn.Conv2d(channels, 2 * z_channels if double_z else z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    """(N, z_channels, h, w) -> (N, out_ch, h*2^(L-1), w*2^(L-1)).

    `up[i]` is stored by level index (up.0 = full resolution) but run from the deepest level up, the reverse order.
    Each decoder level has num_res_blocks + 1 blocks.
    """

    def __init__(self, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, out_ch: int, z_channels: int,
                 attn_levels: tuple[int, ...] = (), dropout: float = 0.0, tanh_out: bool = False):
        super().__init__()
        self.tanh_out = tanh_out
        channels = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, channels, 3, padding=1)
        self.mid = MidBlock(channels, dropout)
        levels = [None] * len(ch_mult)
        for level in reversed(range(len(ch_mult))):
            levels[level] = Level(channels, ch * ch_mult[level], num_res_blocks + 1, level in attn_levels, dropout,
                                  None if level == 0 else "upsample")
            channels = ch * ch_mult[level]
        self.up = nn.ModuleList(levels)
        self.norm_out = group_norm(channels)
        self.conv_out = nn.Conv2d(channels, out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        h = self.conv_out(swish(self.norm_out(h)))
        return torch.tanh(h) if self.tanh_out else h
