"""LDM KL-f8 autoencoder (`ldm.models.autoencoder.AutoencoderKL`), the first stage of GLID-3 XL.

    vae = load_kl_vae("kl-f8.pt")                       # (loader.py) pickled module, state_dict or {'state_dict': ...}
    mean, logvar = vae.encode(x)                        # x: (N, 3, H, W) in [-1, 1]; logvar clamped to [-30, 20]
    z = sample_posterior(mean, logvar, generator)       # (N, 4, H/8, W/8)
    image = vae.decode(z)                               # (N, 3, H, W), roughly [-1, 1], not clamped

GLID-3 works in latents scaled by `SCALE_FACTOR`; `image_to_latent` / `latent_to_image` do that round trip.
"""
from __future__ import annotations

import torch
from torch import nn

from dalle_flow.models.autoencoder_blocks import Decoder, Encoder, LatentAutoencoder
from dalle_flow.models.glid3.config import KLConfig

SCALE_FACTOR = 0.18215  # GLID-3 / LDM latent scale for kl-f8
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


class AutoencoderKL(LatentAutoencoder):
    def __init__(self, config: KLConfig):
        super().__init__()
        self.config = config
        c = config
        self.encoder = Encoder(c.ch, c.ch_mult, c.num_res_blocks, c.in_channels, c.z_channels, True, c.attn_levels,
                               dropout=c.dropout)
        self.decoder = Decoder(c.ch, c.ch_mult, c.num_res_blocks, c.out_ch, c.z_channels, c.attn_levels,
                               dropout=c.dropout, tanh_out=c.tanh_out)
        self.quant_conv = nn.Conv2d(2 * c.z_channels, 2 * c.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(c.embed_dim, c.z_channels, 1)

    def moments(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) -> (N, 2*embed_dim, H/f, W/f): mean and logvar stacked on channels, unclamped."""
        return self.encode_latent(x)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x in [-1, 1] -> posterior (mean, logvar), logvar clamped to [-30, 20] as ldm's DiagonalGaussian does."""
        mean, logvar = self.moments(x).chunk(2, dim=1)
        return mean, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latent (N, embed_dim, h, w) -> image (N, out_ch, h*f, w*f), not clamped."""
        return self.decode_latent(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction through the posterior mode."""
        return self.decode(self.encode(x)[0])


def sample_posterior(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None,
                     noise: torch.Tensor | None = None) -> torch.Tensor:
    """mean + exp(logvar / 2) * noise; noise drawn in float32 from `generator` (on its device) unless given."""
    if noise is None:
        gen_device = generator.device if generator is not None else mean.device
        noise = torch.randn(mean.shape, generator=generator, device=gen_device, dtype=torch.float32)
    noise = noise.to(device=mean.device, dtype=mean.dtype)
    return mean + torch.exp(0.5 * logvar) * noise


@torch.no_grad()
def image_to_latent(vae: AutoencoderKL, image01: torch.Tensor, generator: torch.Generator | None = None,
                    sample: bool = True) -> torch.Tensor:
    """GLID-3's init-image latent: encode(2*img - 1), sample the posterior (or take its mean), times SCALE_FACTOR."""
    mean, logvar = vae.encode(image01 * 2 - 1)
    z = sample_posterior(mean, logvar, generator) if sample else mean
    return z * SCALE_FACTOR


@torch.no_grad()
def latent_to_image(vae: AutoencoderKL, latent: torch.Tensor) -> torch.Tensor:
    """Diffusion-space latent -> image in [0, 1] (float32), as GLID-3 hands it to to_pil_image."""
    image = vae.decode(latent / SCALE_FACTOR)
    return ((image.float() + 1) / 2).clamp(0, 1)
