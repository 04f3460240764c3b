"""GLID-3 XL latent diffusion UNet (the network in `finetune.pt`); its configuration is in config.py, its loader in
loader.py.

The network predicts the noise (eps) of a 4-channel KL-f8 latent, conditioned on a timestep, a BERT token sequence
(cross-attention) and, when the checkpoint was trained for it, a CLIP embedding added to the timestep embedding.

The real file is a flat, un-prefixed state_dict. As in the reference's `model.py`, a few settings are read from the
file itself rather than from the configuration: CLIP conditioning exists iff `clip_proj.weight` is present (its
input width is taken from that tensor), and an inpainting checkpoint has twice the input channels.
"""
from __future__ import annotations

import torch
from torch import nn

from dalle_flow.models.glid3.attention import GroupNorm32, SpatialTransformer
from dalle_flow.models.glid3.unet_blocks import Downsample, ResBlock, Upsample, timestep_embedding
from dalle_flow.models.glid3.config import UNetConfig


class EmbedSequential(nn.ModuleList):
    """One UNet stage: passes the embedding to ResBlocks and the context to transformers."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


class UNet(nn.Module):
    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = c = config
        ch = c.model_channels
        emb_dim = c.time_embed_dim
        self.time_embed = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if c.clip_embed_dim is not None:
            self.clip_proj = nn.Linear(c.clip_embed_dim, emb_dim)

        def transformer(width):
            return SpatialTransformer(width, c.num_heads, width // c.num_heads, c.context_dim, c.transformer_depth)

        self.input_blocks = nn.ModuleList([EmbedSequential([nn.Conv2d(c.input_channels, ch, 3, padding=1)])])
        skip_widths = [ch]  # what each input block hands to the decoder
        ds = 1
        for level, mult in enumerate(c.channel_mult):
            for _ in range(c.num_res_blocks):
                layers = [ResBlock(ch, emb_dim, mult * c.model_channels)]
                ch = mult * c.model_channels
                if ds in c.attention_ds:
                    layers.append(transformer(ch))
                self.input_blocks.append(EmbedSequential(layers))
                skip_widths.append(ch)
            if level != len(c.channel_mult) - 1:
                self.input_blocks.append(EmbedSequential([Downsample(ch)]))
                skip_widths.append(ch)
                ds *= 2

        # the middle block always has a transformer, whatever attention_ds says
        self.middle_block = EmbedSequential([ResBlock(ch, emb_dim), transformer(ch), ResBlock(ch, emb_dim)])

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(c.channel_mult))):
            for i in range(c.num_res_blocks + 1):
                layers = [ResBlock(ch + skip_widths.pop(), emb_dim, c.model_channels * mult)]
                ch = c.model_channels * mult
                if ds in c.attention_ds:
                    layers.append(transformer(ch))
                if level and i == c.num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(EmbedSequential(layers))

        # out.1 is SiLU (no parameters)
        self.out = nn.Sequential(GroupNorm32(32, ch), nn.SiLU(),
                                 nn.Conv2d(c.model_channels, c.out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                clip_embed: torch.Tensor | None = None, image_embed: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, 4, h, w), timesteps (N,) original-process timesteps (float, may be fractional),
        context (N, 77, context_dim), clip_embed (N, clip_embed_dim) or None -> eps (N, 4, h, w) in x's dtype."""
        dtype = self.time_embed[0].weight.dtype
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(dtype))
        if clip_embed is not None:
            if self.config.clip_embed_dim is None:
                raise ValueError("clip_embed was given but this checkpoint has no clip_proj (no CLIP conditioning)")
            emb = emb + self.clip_proj(clip_embed.to(dtype))
        h = x.to(dtype)
        if self.config.image_condition:
            # an inpainting checkpoint run without an image sees zeros, as the reference's sample.py gives it
            image_embed = torch.zeros_like(h) if image_embed is None else image_embed.to(dtype)
            h = torch.cat([h, image_embed], dim=1)
        context = context.to(dtype)

        skips = []
        for block in self.input_blocks:
            h = block(h, emb, context)
            skips.append(h)
        h = self.middle_block(h, emb, context)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context)
        return self.out(h).to(x.dtype)
