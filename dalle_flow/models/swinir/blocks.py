"""Swin transformer block and the residual group (RSTB) that stacks them between a convolution and a skip.

Module and attribute names follow the released checkpoint's keys:
``layers.{i}.residual_group.blocks.{j}.{norm1,attn,norm2,mlp,attn_mask}`` and ``layers.{i}.conv``.
"""
from __future__ import annotations

import torch
from torch import nn

from dalle_flow.models.swinir.window_attention import (WindowAttention, shifted_window_mask, window_merge,
                                                       window_partition)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf) GELU
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def conv_residual(dim: int, kind: str) -> nn.Module:
    """The convolution closing each residual group (and the body): '1conv', or '3conv' (a C/4 bottleneck)."""
    if kind == "1conv":
        return nn.Conv2d(dim, dim, 3, 1, 1)
    if kind == "3conv":
        # Sequential indices 0, 2, 4 are the file's keys; the LeakyReLUs sit at 1 and 3.
        return nn.Sequential(nn.Conv2d(dim, dim // 4, 3, 1, 1), nn.LeakyReLU(0.2),
                             nn.Conv2d(dim // 4, dim // 4, 1, 1, 0), nn.LeakyReLU(0.2),
                             nn.Conv2d(dim // 4, dim, 3, 1, 1))
    raise ValueError(f"resi_connection: must be '1conv' or '3conv', got {kind!r}")


def effective_window(resolution: tuple[int, int], window: int, shift: int) -> tuple[int, int]:
    """The reference shrinks the window to the feature map (and drops the shift) when the map is not larger.

    `resolution` is the training size (img_size / patch_size), so this only matters for configs with a tiny img_size,
    but it changes parameter shapes, so loading has to agree with it.
    """
    if min(resolution) <= window:
        return min(resolution), 0
    return window, shift


class SwinBlock(nn.Module):
    """Pre-norm block: x + W-MSA(LN(x)), then x + MLP(LN(x)); odd blocks use shifted windows."""

    def __init__(self, dim: int, resolution: tuple[int, int], num_heads: int, window: int, shift: int,
                 mlp_ratio: float, qkv_bias: bool = True, qk_scale: float | None = None):
        super().__init__()
        self.resolution = tuple(resolution)
        self.window, self.shift = effective_window(self.resolution, window, shift)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, self.window, num_heads, qkv_bias, qk_scale)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        # The released file stores the mask for the training size; the reference uses it only for inputs of exactly
        # that size and builds a fresh one otherwise. A None buffer stays out of the state dict, as in the file.
        mask = shifted_window_mask(*self.resolution, self.window, self.shift) if self.shift else None
        self.register_buffer("attn_mask", mask)

    def mask_for(self, size: tuple[int, int], cache: dict) -> torch.Tensor | None:
        if not self.shift:
            return None
        if size == self.resolution:
            return self.attn_mask
        key = (size, self.window, self.shift)
        if key not in cache:  # shared by every shifted block of one forward pass
            cache[key] = shifted_window_mask(*size, self.window, self.shift, device=self.attn_mask.device)
        return cache[key]

    def forward(self, x: torch.Tensor, size: tuple[int, int], mask_cache: dict) -> torch.Tensor:
        """x: (B, H*W, C) tokens of an H x W map, H and W multiples of the window."""
        h, w = size
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(window_partition(y, self.window), self.mask_for(size, mask_cache))
        y = window_merge(y, self.window, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class SwinStage(nn.Module):
    """`depth` blocks alternating plain and shifted windows (the reference's BasicLayer, without downsampling)."""

    def __init__(self, dim, resolution, depth, num_heads, window, mlp_ratio, qkv_bias=True, qk_scale=None):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, resolution, num_heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio, qkv_bias,
                      qk_scale)
            for i in range(depth))

    def forward(self, x, size, mask_cache):
        for block in self.blocks:
            x = block(x, size, mask_cache)
        return x


class ResidualSwinGroup(nn.Module):
    """RSTB: tokens -> Swin blocks -> image -> conv -> tokens, plus the group's input."""

    def __init__(self, dim, resolution, depth, num_heads, window, mlp_ratio, qkv_bias=True, qk_scale=None,
                 resi_connection="3conv"):
        super().__init__()
        self.residual_group = SwinStage(dim, resolution, depth, num_heads, window, mlp_ratio, qkv_bias, qk_scale)
        self.conv = conv_residual(dim, resi_connection)

    def forward(self, x: torch.Tensor, size: tuple[int, int], mask_cache: dict) -> torch.Tensor:
        b, _, c = x.shape
        y = self.residual_group(x, size, mask_cache)
        y = self.conv(y.transpose(1, 2).reshape(b, c, *size))  # tokens -> (B, C, H, W)
        return y.flatten(2).transpose(1, 2) + x
