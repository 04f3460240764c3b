"""Codebook of the VQGAN: nearest-row quantisation (encode) and id -> latent lookup (decode_code)."""
from __future__ import annotations

import math

import torch
from torch import nn


class VectorQuantizer(nn.Module):
    def __init__(self, n_embed: int, embed_dim: int):
        super().__init__()
        self.n_embed, self.embed_dim = n_embed, embed_dim
        self.embedding = nn.Embedding(n_embed, embed_dim)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (b, embed_dim, h, w) -> (codebook rows (b, embed_dim, h, w), ids (b, h*w) int64 in raster order)."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d).float()  # (b*h*w, d) in raster order
        codebook = self.embedding.weight.float()
        # |z|^2 + |e|^2 - 2 z.e, the reference's expansion (not cdist), always in float32 so that half-precision
        # runs pick the same rows; argmin returns the first index on ties, like jnp.argmin
        distance = flat.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1) - 2.0 * (flat @ codebook.t())
        ids = distance.argmin(dim=1)
        quant = self.embedding(ids).reshape(b, h, w, d).permute(0, 3, 1, 2).contiguous()
        return quant, ids.reshape(b, h * w)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (b, t) with t a perfect square, raster order -> latents (b, embed_dim, s, s), s = sqrt(t)."""
        if ids.dim() != 2:
            raise ValueError(f"image token ids must have shape (batch, tokens), got {tuple(ids.shape)}")
        if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.is_complex():
            raise ValueError(f"image token ids must be integers, got {ids.dtype}")
        b, t = ids.shape
        side = math.isqrt(t)
        if side * side != t or t == 0:
            raise ValueError(f"the number of image tokens must be a non-zero perfect square, got {t}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.n_embed):
            raise ValueError(f"image token ids must lie in [0, {self.n_embed}), got range "
                             f"[{int(ids.min())}, {int(ids.max())}]")
        rows = self.embedding(ids.long())  # (b, t, d)
        return rows.reshape(b, side, side, self.embed_dim).permute(0, 3, 1, 2).contiguous()
