"""VQGAN encoder: pixels (b, in_channels, H, W) -> z (b, z_channels [x2 if double_z], H/f, W/f), f = 2**(levels-1)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dalle_flow.models.vqgan.blocks import AttnBlock, Downsample, MidBlock, ResnetBlock, group_norm, run_level
from dalle_flow.models.vqgan.config import VQGANConfig


class DownLevel(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, with_attn: bool, downsample: bool,
                 resamp_with_conv: bool):
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()
        width = in_channels
        for _ in range(num_blocks):
            self.block.append(ResnetBlock(width, out_channels))
            width = out_channels
            if with_attn:
                self.attn.append(AttnBlock(width))
        # with zero blocks the width never changed, and the reference sizes the downsample on what came in
        self.downsample = Downsample(width, resamp_with_conv) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = run_level(self.block, self.attn, x)
        return self.downsample(x) if self.downsample is not None else x


class Encoder(nn.Module):
    def __init__(self, config: VQGANConfig):
        super().__init__()
        c = config
        self.conv_in = nn.Conv2d(c.in_channels, c.ch, 3, padding=1)
        in_mult = (1,) + c.ch_mult
        self.down = nn.ModuleList()
        res = c.resolution  # nominal resolution of each level, halved (floor) after every level but the last
        for i, mult in enumerate(c.ch_mult):
            last = i == c.num_resolutions - 1
            self.down.append(DownLevel(c.ch * in_mult[i], c.ch * mult, c.num_res_blocks, res in c.attn_resolutions,
                                       not last, c.resamp_with_conv))
            if not last:
                res //= 2
        width = c.ch * c.ch_mult[-1]
        self.mid = MidBlock(width)
        self.norm_out = group_norm(width)
        self.conv_out = nn.Conv2d(width, 2 * c.z_channels if c.double_z else c.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for level in self.down:
            x = level(x)
        x = self.mid(x)
        return self.conv_out(F.silu(self.norm_out(x)))
