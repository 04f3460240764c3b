"""VQGAN hyper-parameters, in the terms of taming-transformers' `ddconfig` (as saved in the HF `config.json`)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

# written by transformers' save_pretrained next to the model fields; they carry no architecture information
_METADATA_KEYS = {"architectures", "transformers_version", "model_type", "_name_or_path", "torch_dtype", "dtype",
                  "num_resolutions"}


@dataclass(frozen=True)
class VQGANConfig:
    """Defaults are the released f16 ImageNet model (`dalle-mini/vqgan_imagenet_f16_16384`)."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    resolution: int = 256  # nominal; only decides at which levels attention blocks exist
    attn_resolutions: tuple[int, ...] = (16,)
    z_channels: int = 256
    embed_dim: int = 256
    n_embed: int = 16384
    in_channels: int = 3
    out_ch: int = 3
    dropout: float = 0.0  # used in training only (dropout is the identity in eval mode)
    double_z: bool = False
    resamp_with_conv: bool = True
    give_pre_end: bool = False
    extra: dict = field(default_factory=dict, compare=False, repr=False)  # unrecognised keys, kept for inspection

    def __post_init__(self):
        object.__setattr__(self, "ch_mult", tuple(int(m) for m in self.ch_mult))
        object.__setattr__(self, "attn_resolutions", tuple(int(r) for r in self.attn_resolutions))
        if not self.ch_mult:
            raise ValueError("VQGAN config: ch_mult must have at least one level")
        if self.num_res_blocks < 0:
            raise ValueError(f"VQGAN config: num_res_blocks must be >= 0, got {self.num_res_blocks}")
        # GroupNorm always uses 32 groups, so every normalised width must divide by 32
        widths = [self.ch] + [self.ch * m for m in self.ch_mult]
        if any(w <= 0 or w % 32 for w in widths):
            raise ValueError(f"VQGAN config: ch * ch_mult must be positive multiples of 32, got {widths}")

    @property
    def num_resolutions(self) -> int:
        return len(self.ch_mult)

    @property
    def downsample_factor(self) -> int:
        return 2 ** (self.num_resolutions - 1)

    # Attention sits at the levels whose nominal resolution is in `attn_resolutions`. The reference's encoder halves
    # `resolution` (floor) level by level, while its decoder restarts from resolution // 2**(n-1) and doubles: the
    # two sequences differ when `resolution` is not a multiple of 2**(n-1) (e.g. 90), hence one property for each.
    @property
    def encoder_attn_levels(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.num_resolutions) if self.resolution // 2 ** i in self.attn_resolutions)

    @property
    def decoder_attn_levels(self) -> tuple[int, ...]:
        lowest = self.resolution // self.downsample_factor
        return tuple(i for i in range(self.num_resolutions)
                     if lowest * 2 ** (self.num_resolutions - 1 - i) in self.attn_resolutions)

    @classmethod
    def from_dict(cls, data: dict) -> "VQGANConfig":
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names and k not in _METADATA_KEYS}
        config = cls(**known, extra=extra)
        stated = data.get("num_resolutions")
        if stated is not None and int(stated) != config.num_resolutions:
            raise ValueError(f"VQGAN config: num_resolutions={stated} disagrees with "
                             f"len(ch_mult)={config.num_resolutions}")
        return config

    @classmethod
    def from_json(cls, path) -> "VQGANConfig":
        with open(Path(path)) as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("extra")
        data["ch_mult"] = list(self.ch_mult)
        data["attn_resolutions"] = list(self.attn_resolutions)
        data["num_resolutions"] = self.num_resolutions
        return data


def tiny_config(n_embed: int = 64) -> VQGANConfig:
    """Five levels like the real model (16x16 codes -> 256x256 images) but 32-64 channels and one block per level;
    `n_embed` must match the image vocabulary of the DalleBart that produces the codes."""
    return VQGANConfig(ch=32, ch_mult=(1, 1, 1, 2, 2), num_res_blocks=1, resolution=256, attn_resolutions=(16,),
                       z_channels=32, embed_dim=16, n_embed=n_embed)
