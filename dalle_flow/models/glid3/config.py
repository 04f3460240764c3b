"""Configurations of GLID-3 XL's three networks: the UNet (finetune.pt), the KL-f8 autoencoder (kl-f8.pt) and the LDM
BERT text encoder (bert.pt), with the real sizes as defaults and the tiny preset's."""
from __future__ import annotations

from dataclasses import dataclass, replace

from dalle_flow.models.glid3.tokenizer import tiny_vocab


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


# A small UNet of the real architecture for tests and the tiny preset: 32x32 latents (256x256 images after the f8
# VAE). Spatial transformers at downsample 2 and 4 and in the middle; the real model also attends at full latent
# resolution (ds 1), left out here because 1024-token attention would make CPU sampling ~4x slower.
TINY_UNET_CONFIG = UNetConfig(model_channels=32, channel_mult=(1, 1, 2), num_res_blocks=1, attention_ds=(2, 4),
                         num_heads=4, context_dim=16, clip_embed_dim=None, latent_size=32)


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


def tiny_kl_config() -> KLConfig:
    # four levels -> f8 like the real model; 256x256 images <-> 32x32x4 latents
    return KLConfig(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1, z_channels=4, embed_dim=4)


DIM_HEAD = 64  # x-transformers' default head width; ldm never overrides it (nor heads=8)


@dataclass(frozen=True)
class BertConfig:
    n_embed: int = 1280
    n_layer: int = 32
    vocab_size: int = 30522
    max_seq_len: int = 77
    heads: int = 8
    dim_head: int = DIM_HEAD
    ff_mult: int = 4
    layer_types: tuple[str, ...] | None = None  # 'a' attention / 'f' feed-forward; None = ('a', 'f') * n_layer
    with_logits: bool = False  # keep the unused `to_logits` head (only to mirror the file's keys)

    @property
    def layers(self) -> tuple[str, ...]:
        return self.layer_types if self.layer_types is not None else ("a", "f") * self.n_layer


def tiny_bert_config() -> BertConfig:
    # dim_head stays 64 (ldm's fixed value) so a tiny model saved like bert.pt reloads with the same loader
    return BertConfig(n_embed=32, n_layer=2, vocab_size=len(tiny_vocab()), max_seq_len=77, heads=2, dim_head=DIM_HEAD)
