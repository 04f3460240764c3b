"""Classifier-free guidance as GLID-3 XL's sample.py does it, quirks included.

The batch has 2B rows: conditioning rows [0:B] (prompt), [B:2B] (blank). Only the first half of x is used, fed
twice. Only eps channels 0..2 are guided; channel 3 is passed through unguided (conditional in rows [0:B],
unconditional in rows [B:2B]). This comes from GLIDE, where the output was 3 RGB eps + 3 variance channels; applied
to a 4-channel latent it leaves channel 3 unguided, and finetune.pt produces its images that way.
"""
from __future__ import annotations

import torch

from dalle_flow.models.glid3.unet import UNet

GUIDED_CHANNELS = 3


def guided_model_fn(unet: UNet, context: torch.Tensor, guidance_scale: float, clip_embed: torch.Tensor | None = None,
                    image_embed: torch.Tensor | None = None):
    """model_fn(x_t (2B,4,h,w), timesteps (2B,)) -> (2B,4,h,w) float32, for `PlmsSampler`.

    context (2B, 77, C), clip_embed (2B, D) or None (checkpoint without clip_proj), rows conditional then blank.
    """
    if context.shape[0] % 2:
        raise ValueError(f"context must have 2B rows (conditional then blank), got {context.shape[0]}")

    def model_fn(x_t: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        half = x_t[: x_t.shape[0] // 2]
        out = unet(torch.cat([half, half]), timesteps, context, clip_embed=clip_embed, image_embed=image_embed).float()
        eps, rest = out[:, :GUIDED_CHANNELS], out[:, GUIDED_CHANNELS:]
        cond, uncond = eps.chunk(2)
        guided = uncond + guidance_scale * (cond - uncond)
        return torch.cat([torch.cat([guided, guided]), rest], dim=1)

    return model_fn
