"""VQGAN decoder: z (b, z_channels, h, w) -> images (b, out_ch, h*f, w*f), no final activation (values unbounded)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dalle_flow.models.vqgan.blocks import AttnBlock, MidBlock, ResnetBlock, Upsample, group_norm, run_level
from dalle_flow.models.vqgan.config import VQGANConfig


class UpLevel(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, with_attn: bool, upsample: bool,
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
        self.upsample = Upsample(width, resamp_with_conv) if upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = run_level(self.block, self.attn, x)
        return self.upsample(x) if self.upsample is not None else x


class Decoder(nn.Module):
    def __init__(self, config: VQGANConfig):
        super().__init__()
        c = config
        n = c.num_resolutions
        width = c.ch * c.ch_mult[-1]
        self.conv_in = nn.Conv2d(c.z_channels, width, 3, padding=1)
        self.mid = MidBlock(width)
        # `up[i]` is level i (up[0] = full resolution) but is built and run from the lowest level upwards. The
        # nominal resolutions restart from resolution // 2**(n-1) and double, which is not always the encoder's
        # sequence (e.g. resolution 90), so they are recomputed here rather than shared.
        levels = {}
        res = c.resolution // 2 ** (n - 1)
        for i in reversed(range(n)):
            out_width = c.ch * c.ch_mult[i]
            levels[i] = UpLevel(width, out_width, c.num_res_blocks + 1, res in c.attn_resolutions, i != 0,
                                c.resamp_with_conv)
            width = out_width
            if i != 0:
                res *= 2
        self.up = nn.ModuleList(levels[i] for i in range(n))
        self.give_pre_end = c.give_pre_end
        self.norm_out = group_norm(width)
        self.conv_out = nn.Conv2d(width, c.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            x = level(x)
        if self.give_pre_end:
            return x
        return self.conv_out(F.silu(self.norm_out(x)))
