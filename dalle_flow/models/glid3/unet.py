"""GLID-3 XL latent diffusion UNet (the network in `finetune.pt`), its configuration and its strict loader.

The network predicts the noise (eps) of a 4-channel KL-f8 latent, conditioned on a timestep, a BERT token sequence
(cross-attention) and, when the checkpoint was trained for it, a CLIP embedding added to the timestep embedding.

The real file is a flat, un-prefixed state_dict. As in the reference's `model.py`, a few settings are read from the
file itself rather than from the configuration: CLIP conditioning exists iff `clip_proj.weight` is present (its
input width is taken from that tensor), and an inpainting checkpoint has twice the input channels.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from dalle_flow.models.glid3.attention import GroupNorm32, SpatialTransformer
from dalle_flow.models.glid3.unet_blocks import Downsample, ResBlock, Upsample, timestep_embedding
from dalle_flow.runtime.state_dict import load_state_dict_strict


@dataclass(frozen=True)
class UNetConfig:
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_ds: tuple[int, ...] = (1, 2, 4)  # downsample factors with a spatial transformer
    num_heads: int = 8  # dim_head = channels // num_heads, so it grows with depth
    context_dim: int = 1280  # width of the BERT token embeddings
    clip_embed_dim: int | None = None  # None: no clip_proj, CLIP embeddings are not used
    in_channels: int = 4
    out_channels: int = 4
    image_condition: bool = False  # inpainting checkpoints: input = cat[x, image latent]
    transformer_depth: int = 1
    latent_size: int = 32  # side trained at (256 px / 8); any side divisible by 2**(levels - 1) runs

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels

    @property
    def input_channels(self) -> int:
        return self.in_channels * (2 if self.image_condition else 1)

    @classmethod
    def from_reference(cls, params: dict) -> "UNetConfig":
        """Build from `create_model_and_diffusion` keyword arguments (the reference's terms, as in fixture.json)."""
        unsupported = {
            "use_spatial_transformer": (params.get("use_spatial_transformer", True), True),
            "use_scale_shift_norm": (params.get("use_scale_shift_norm", False), False),
            "resblock_updown": (params.get("resblock_updown", False), False),
            "class_cond": (params.get("class_cond", False), False),
            "super_res_condition": (params.get("super_res_condition", False), False),
        }
        for name, (value, needed) in unsupported.items():
            if bool(value) != needed:
                raise ValueError(f"{name}={value!r} is not supported (GLID-3 XL finetune.pt uses {needed})")
        image_size = int(params["image_size"])
        mult = params.get("channel_mult", "")
        if isinstance(mult, str):
            mult = _default_channel_mult(image_size) if mult == "" else tuple(int(m) for m in mult.split(","))
        resolutions = params.get("attention_resolutions", "16,8")
        if isinstance(resolutions, str):
            resolutions = [int(r) for r in resolutions.split(",")]
        clip_dim = params.get("clip_embed_dim")
        return cls(
            model_channels=int(params["num_channels"]),
            channel_mult=tuple(int(m) for m in mult),
            num_res_blocks=int(params["num_res_blocks"]),
            attention_ds=tuple(image_size // int(r) for r in resolutions),
            num_heads=int(params["num_heads"]),
            context_dim=int(params.get("context_dim", 1280)),
            clip_embed_dim=None if clip_dim is None else int(clip_dim),
            in_channels=4 if image_size == 32 else 3,  # the reference's rule; only 32 (latent) is used here
            out_channels=4,  # learn_sigma does not change it in this fork
            image_condition=bool(params.get("image_condition", False)),
            transformer_depth=int(params.get("transformer_depth", 1)),
            latent_size=image_size,
        )

    def for_state_dict(self, state_dict: dict) -> "UNetConfig":
        """The settings the reference reads from the checkpoint file instead of its configuration."""
        if "external_block.0.0.weight" in state_dict:
            raise ValueError("checkpoint has external_block.* (super-resolution conditioning), which is not "
                             "supported: DALL·E Flow's finetune.pt has none")
        clip = state_dict.get("clip_proj.weight")
        first = state_dict.get("input_blocks.0.0.weight")
        image_condition = first is not None and first.ndim == 4 and first.shape[1] == 2 * self.in_channels
        return replace(self, clip_embed_dim=None if clip is None else int(clip.shape[1]),
                       image_condition=image_condition)


def _default_channel_mult(image_size: int) -> tuple[int, ...]:
    # the reference's table without its 512 entry, whose 0.5 multiplier GLID-3 XL never uses
    table = {256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4), 32: (1, 2, 4, 4)}
    if image_size not in table:
        raise ValueError(f"image_size {image_size}: no default channel_mult; give channel_mult explicitly")
    return table[image_size]


# DALL·E Flow's model_params (dalle_flow_glid3/model.py) merged over the reference defaults; clip_embed_dim and
# image_condition are then decided by the checkpoint (`UNetConfig.for_state_dict`).
FINETUNE_REFERENCE_PARAMS = {
    "image_size": 32, "num_channels": 320, "num_res_blocks": 2, "num_heads": 8, "num_heads_upsample": -1,
    "num_head_channels": -1, "attention_resolutions": "32,16,8", "channel_mult": "", "dropout": 0.0,
    "class_cond": False, "use_checkpoint": False, "use_scale_shift_norm": False, "resblock_updown": False,
    "use_fp16": False, "use_spatial_transformer": True, "context_dim": 1280, "clip_embed_dim": None,
    "image_condition": False, "super_res_condition": False, "learn_sigma": False, "diffusion_steps": 1000,
    "noise_schedule": "linear", "timestep_respacing": "100", "use_kl": False, "predict_xstart": False,
    "rescale_timesteps": True, "rescale_learned_sigmas": False,
}
FINETUNE_CONFIG = UNetConfig.from_reference(FINETUNE_REFERENCE_PARAMS)


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


def build_unet(config: UNetConfig, device="cpu", dtype: torch.dtype = torch.float32) -> UNet:
    """An uninitialised-for-inference UNet (torch default init); `device='meta'` allocates nothing."""
    with torch.device(device):
        model = UNet(config)
    return model.to(dtype=dtype).eval().requires_grad_(False)


def unet_from_state_dict(state_dict: dict, config: UNetConfig = FINETUNE_CONFIG, device="cpu",
                         dtype: torch.dtype = torch.float32) -> UNet:
    """Strict load: every tensor of the file used, every parameter filled, shapes equal; cast to `dtype`."""
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError("expected a flat state_dict of tensors (torch.save(model.state_dict()), like finetune.pt)")
    config = config.for_state_dict(state_dict)
    model = build_unet(config, device="meta", dtype=dtype)
    tensors = {k: v.to(device=device, dtype=dtype) for k, v in state_dict.items()}
    load_state_dict_strict(model, tensors, "state_dict", assign=True)
    return model.eval().requires_grad_(False)


def load_unet(path, config: UNetConfig = FINETUNE_CONFIG, device="cpu", dtype: torch.dtype = torch.float32) -> UNet:
    """Load a `finetune.pt`-style file (flat state_dict, un-prefixed keys) with weights_only unpickling."""
    state_dict = torch.load(Path(path), map_location="cpu", weights_only=True)
    try:
        return unet_from_state_dict(state_dict, config, device, dtype)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


# A small UNet of the real architecture for tests and the tiny preset: 32x32 latents (256x256 images after the f8
# VAE). Spatial transformers at downsample 2 and 4 and in the middle; the real model also attends at full latent
# resolution (ds 1), left out here because 1024-token attention would make CPU sampling ~4x slower.
TINY_CONFIG = UNetConfig(model_channels=32, channel_mult=(1, 1, 2), num_res_blocks=1, attention_ds=(2, 4),
                         num_heads=4, context_dim=16, clip_embed_dim=None, latent_size=32)


def tiny_unet(context_dim: int = TINY_CONFIG.context_dim, clip_embed_dim: int | None = None, seed: int = 0,
              device="cpu", dtype: torch.dtype = torch.float32) -> UNet:
    """Deterministic random tiny UNet (no files). `context_dim` must match the BERT embedder it is paired with."""
    config = replace(TINY_CONFIG, context_dim=context_dim, clip_embed_dim=clip_embed_dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = UNet(config)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
