"""LDM KL-f8 autoencoder (`ldm.models.autoencoder.AutoencoderKL`), the first stage of GLID-3 XL.

    vae = load_kl_vae("kl-f8.pt")                       # pickled whole module, plain state_dict or {'state_dict': ...}
    mean, logvar = vae.encode(x)                        # x: (N, 3, H, W) in [-1, 1]; logvar clamped to [-30, 20]
    z = sample_posterior(mean, logvar, generator)       # (N, 4, H/8, W/8)
    image = vae.decode(z)                               # (N, 3, H, W), roughly [-1, 1], not clamped

GLID-3 works in latents scaled by `SCALE_FACTOR`; `image_to_latent` / `latent_to_image` do that round trip.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from dalle_flow.models.autoencoder_blocks import Decoder, Encoder, LatentAutoencoder
from dalle_flow.models.glid3.unpickle import Checkpoint, load_checkpoint
from dalle_flow.runtime.state_dict import load_state_dict_strict

SCALE_FACTOR = 0.18215  # GLID-3 / LDM latent scale for kl-f8
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


@dataclass(frozen=True)
class KLConfig:
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    embed_dim: int = 4
    in_channels: int = 3
    out_ch: int = 3
    attn_levels: tuple[int, ...] = ()  # level indices with attention after each resnet block (kl-f8: none)
    dropout: float = 0.0
    tanh_out: bool = False

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @classmethod
    def from_reference(cls, ddconfig: dict, embed_dim: int) -> "KLConfig":
        """From ldm's `ddconfig` + `embed_dim` (config.yaml terms)."""
        if not ddconfig.get("double_z", True):
            raise ValueError("AutoencoderKL needs double_z=True (the encoder outputs mean and logvar)")
        if ddconfig.get("attn_type", "vanilla") != "vanilla" or ddconfig.get("use_linear_attn", False):
            raise ValueError("only vanilla attention blocks are supported")
        ch_mult = tuple(int(m) for m in ddconfig["ch_mult"])
        resolution = int(ddconfig["resolution"])
        attn_res = set(int(r) for r in ddconfig.get("attn_resolutions", ()))
        return cls(ch=int(ddconfig["ch"]), ch_mult=ch_mult, num_res_blocks=int(ddconfig["num_res_blocks"]),
                   z_channels=int(ddconfig["z_channels"]), embed_dim=int(embed_dim),
                   in_channels=int(ddconfig["in_channels"]), out_ch=int(ddconfig["out_ch"]),
                   attn_levels=tuple(i for i in range(len(ch_mult)) if resolution // 2 ** i in attn_res),
                   dropout=float(ddconfig.get("dropout", 0.0)), tanh_out=bool(ddconfig.get("tanh_out", False)))


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


# ---------------------------------------------------------------------------------------------------------------------
# loading

_ENCODER_LEVEL = re.compile(r"^encoder\.down\.(\d+)\.(block|attn)\.(\d+)\.")


def config_from_state_dict(sd: dict[str, torch.Tensor], tanh_out: bool = False) -> KLConfig:
    """Every size read off the tensors: widths, levels, blocks per level, attention levels, latent channels."""
    def shape(key):
        if key not in sd:
            raise ValueError(f"not an AutoencoderKL state_dict: {key!r} is missing")
        return tuple(sd[key].shape)

    ch, in_channels = shape("encoder.conv_in.weight")[:2]
    levels: dict[int, int] = {}
    attn_levels = set()
    for key in sd:
        m = _ENCODER_LEVEL.match(key)
        if m:
            level, kind, idx = int(m.group(1)), m.group(2), int(m.group(3))
            if kind == "block":
                levels[level] = max(levels.get(level, 0), idx + 1)
            else:
                attn_levels.add(level)
    if not levels or sorted(levels) != list(range(len(levels))):
        raise ValueError(f"encoder.down levels are not 0..n-1: {sorted(levels)}")
    num_res_blocks = levels[0]
    if any(n != num_res_blocks for n in levels.values()):
        raise ValueError(f"encoder levels have different block counts: {levels}")
    ch_mult = []
    for level in range(len(levels)):
        out = shape(f"encoder.down.{level}.block.0.conv1.weight")[0]
        if out % ch:
            raise ValueError(f"encoder level {level} width {out} is not a multiple of ch={ch}")
        ch_mult.append(out // ch)
    z_channels = shape("decoder.conv_in.weight")[1]
    embed_dim = shape("post_quant_conv.weight")[1]
    out_ch = shape("decoder.conv_out.weight")[0]
    if shape("encoder.conv_out.weight")[0] != 2 * z_channels:
        raise ValueError("encoder.conv_out must produce 2*z_channels (double_z) for a KL autoencoder")
    return KLConfig(ch=ch, ch_mult=tuple(ch_mult), num_res_blocks=num_res_blocks, z_channels=z_channels,
                    embed_dim=embed_dim, in_channels=in_channels, out_ch=out_ch, attn_levels=tuple(sorted(attn_levels)),
                    tanh_out=tanh_out)


def _drop_loss(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # the training loss (LPIPS + discriminator) is stored beside the model in training checkpoints
    return {k: v for k, v in sd.items() if not k.startswith("loss.")}


def _pickled_tanh_out(ckpt: Checkpoint) -> bool:
    attrs = ckpt.attributes("decoder")
    if attrs.get("give_pre_end", False):
        raise ValueError("the pickled decoder has give_pre_end=True (returns features, not images); unsupported")
    return bool(attrs.get("tanh_out", False))


def load_kl_vae(path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> AutoencoderKL:
    """Load kl-f8.pt (pickled AutoencoderKL), a plain state_dict, or a {'state_dict': ...} checkpoint.

    The pickled module is read with the restricted unpickler (no ldm / pytorch_lightning needed, no code run).
    `loss.*` tensors are dropped; every other tensor must fit the model built from the tensors' own shapes.
    """
    ckpt = load_checkpoint(path)
    sd = _drop_loss(ckpt.state_dict)
    config = config_from_state_dict(sd, tanh_out=_pickled_tanh_out(ckpt))
    embed_dim = ckpt.attributes().get("embed_dim")
    if embed_dim is not None and int(embed_dim) != config.embed_dim:
        raise ValueError(f"pickled embed_dim={embed_dim} disagrees with post_quant_conv ({config.embed_dim})")
    with torch.device("meta"):
        model = AutoencoderKL(config)
    load_state_dict_strict(model, {k: v.float() for k, v in sd.items()}, f"{path}", assign=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def tiny_kl_config() -> KLConfig:
    # four levels -> f8 like the real model; 256x256 images <-> 32x32x4 latents
    return KLConfig(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1, z_channels=4, embed_dim=4)


def tiny_kl_vae(seed: int = 0, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                config: KLConfig | None = None) -> AutoencoderKL:
    """Small AutoencoderKL with deterministic random weights (no files): f8, 4 latent channels."""
    config = config or tiny_kl_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoencoderKL(config)
        # keep the latents of random weights in a sane range: shrink the logvar rows so samples stay near the mean
        with torch.no_grad():
            model.quant_conv.bias[config.embed_dim:] -= 4.0
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def full_kl_f8_meta(config: KLConfig | None = None) -> AutoencoderKL:
    """The full-size kl-f8 on the meta device (no memory), for key/shape checks."""
    with torch.device("meta"):
        return AutoencoderKL(config or KLConfig())
