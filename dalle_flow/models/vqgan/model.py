"""VQGAN f16 (taming-transformers architecture) as used by DALL·E mini/Mega/Flow to turn image tokens into pixels.

All tensors are NCHW. Pixels are RGB in [0, 1] (the DALL·E mini convention, not [-1, 1]); decoded images are
unbounded floats that callers clip (see `postprocess`).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dalle_flow.models.autoencoder_blocks import Decoder, Encoder, LatentAutoencoder
from dalle_flow.models.vqgan.config import VQGANConfig
from dalle_flow.models.vqgan.quantizer import VectorQuantizer

# the modules only `encode` uses: DALL·E Mega serving only decodes, so it builds the VQGAN without them
ENCODER_MODULES = ("encoder", "quant_conv")


class VQGAN(LatentAutoencoder):
    def __init__(self, config: VQGANConfig, with_encoder: bool = True):
        """`with_encoder=False` builds the decoding half only (codebook, post_quant_conv, decoder): the serving path
        never encodes pixels, and the encoder is 29 M of the 76 M parameters."""
        super().__init__()
        self.config = config
        c = config
        self.with_encoder = with_encoder
        if with_encoder:
            self.encoder = Encoder(c.ch, c.ch_mult, c.num_res_blocks, c.in_channels, c.z_channels, c.double_z,
                                   c.encoder_attn_levels, c.resamp_with_conv, c.dropout)
        self.decoder = Decoder(c.ch, c.ch_mult, c.num_res_blocks, c.out_ch, c.z_channels, c.decoder_attn_levels,
                               c.resamp_with_conv, c.dropout, give_pre_end=c.give_pre_end)
        self.quantize = VectorQuantizer(c.n_embed, c.embed_dim)
        if with_encoder:  # built in this order, as always: the tiny preset's random weights depend on it
            self.quant_conv = nn.Conv2d(2 * c.z_channels if c.double_z else c.z_channels, c.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(c.embed_dim, c.z_channels, 1)

    def pre_quant(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (b, in_channels, H, W) in [0, 1] -> z_e (b, embed_dim, H/f, W/f), before quantisation."""
        if not self.with_encoder:
            raise RuntimeError("this VQGAN was loaded without its encoder (with_encoder=False): it can only decode")
        return self.encode_latent(pixels)

    def encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pixels (b, in_channels, H, W) -> (quantised latents (b, embed_dim, H/f, W/f), ids (b, H/f * W/f))."""
        return self.quantize(self.pre_quant(pixels))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (b, embed_dim, h, w) -> images (b, out_ch, h*f, w*f) float32, not clipped."""
        return self.decode_latent(latents).float()

    def decode_code(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (b, s*s) in raster order (DalleBart output without BOS) -> images (b, out_ch, s*f, s*f) float32."""
        ids = torch.as_tensor(ids, device=self.device)
        return self.decode(self.quantize.lookup(ids))

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction: (decode(encode(pixels) latents), ids)."""
        quant, ids = self.encode(pixels)
        return self.decode(quant), ids


def postprocess(images: torch.Tensor) -> np.ndarray:
    """Decoded images (b, 3, H, W) -> uint8 (b, H, W, 3), as DALL·E Flow does it: clip to [0, 1], multiply by 255
    in float32 and truncate (no rounding)."""
    images = images.detach().float().clamp(0.0, 1.0).mul(255.0)
    return images.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
