"""SwinIR configuration: the reference's constructor arguments (same names) and the tiny preset's."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# Hard-coded in the reference (not constructor arguments, not stored in the file). Both are fields of SwinIRConfig
# so that a fixture or a tiny model can state them; the released model needs exactly these values.
NUM_FEAT = 64  # channels of the reconstruction head, whatever embed_dim is
RGB_MEAN = (0.4488, 0.4371, 0.4040)  # DIV2K mean, subtracted before the network and added back after


@dataclass
class SwinIRConfig:
    """Constructor arguments of the reference SwinIR (same names), plus the two hard-coded constants.

    Defaults are the released real-SR x4 large model (`define_model`, task real_sr, --large_model).
    """
    upscale: int = 4
    in_chans: int = 3
    img_size: int | tuple[int, int] = 64  # training crop: fixes the stored attn_mask buffers' shapes
    window_size: int = 8
    img_range: float = 1.0
    depths: tuple[int, ...] = (6,) * 9
    embed_dim: int = 240
    num_heads: tuple[int, ...] = (8,) * 9
    mlp_ratio: float = 2.0
    upsampler: str = "nearest+conv"
    resi_connection: str = "3conv"
    patch_size: int = 1
    qkv_bias: bool = True
    qk_scale: float | None = None
    ape: bool = False
    patch_norm: bool = True
    num_feat: int = NUM_FEAT
    rgb_mean: tuple[float, ...] = RGB_MEAN
    # Training-only switches of the reference; they do nothing in eval mode but appear in its configs.
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    use_checkpoint: bool = False

    def __post_init__(self):
        self.depths = tuple(int(d) for d in self.depths)
        self.num_heads = tuple(int(h) for h in self.num_heads)
        self.rgb_mean = tuple(float(m) for m in self.rgb_mean)
        if isinstance(self.img_size, (list, tuple)):
            self.img_size = tuple(int(s) for s in self.img_size)
        if self.upsampler != "nearest+conv":
            raise ValueError(f"upsampler: only 'nearest+conv' (real-world SR) is implemented, got {self.upsampler!r}")
        if self.upscale not in (2, 4):
            raise ValueError(f"upscale: the 'nearest+conv' head upsamples by 2 or 4, got {self.upscale!r}")
        if len(self.depths) != len(self.num_heads):
            raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} must have the same length")
        if any(self.embed_dim % h for h in self.num_heads):
            raise ValueError(f"embed_dim {self.embed_dim} must be divisible by every num_heads {self.num_heads}")
        if self.in_chans == 3 and len(self.rgb_mean) != 3:
            raise ValueError(f"rgb_mean: needs 3 values, got {self.rgb_mean}")

    @classmethod
    def from_dict(cls, values: dict) -> "SwinIRConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown SwinIR config keys {unknown}; known: {sorted(names)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def resolution(self) -> tuple[int, int]:
        """Token grid of a training crop; the size for which the stored masks were built."""
        size = self.img_size if isinstance(self.img_size, tuple) else (self.img_size, self.img_size)
        return size[0] // self.patch_size, size[1] // self.patch_size


def tiny_config() -> SwinIRConfig:
    """Every structural switch of the released model (window 8, 3conv, x4 nearest+conv) at a small size.

    num_feat is 16 instead of the released 64: the reconstruction head runs at 2x and 4x resolution and would
    dominate a 256 -> 1024 CPU run otherwise.
    """
    return SwinIRConfig(img_size=64, depths=(2, 2), embed_dim=16, num_heads=(2, 2), num_feat=16)
