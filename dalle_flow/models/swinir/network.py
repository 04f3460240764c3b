"""SwinIR for real-world super-resolution (the 'nearest+conv' reconstruction head), as in the released
`003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth`.

    image in [0, 1] -> subtract RGB mean -> conv_first (3x3, 3 -> C)                         f0: (B, C, H, W)
    -> LayerNorm -> N residual Swin groups -> LayerNorm -> conv_after_body, + f0              (B, C, H, W)
    -> conv 3x3 C -> 64, LeakyReLU(0.01) -> [nearest x2, conv 3x3, LeakyReLU(0.2)] x log2(upscale)
    -> conv_hr 3x3, LeakyReLU(0.2) -> conv_last 3x3 64 -> 3 -> add RGB mean                  (B, 3, sH, sW)

The output is not clamped. Inputs whose sides are not multiples of the window are reflect-padded bottom/right and the
output is cropped back, as the reference's forward does.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dalle_flow.models.swinir.blocks import ResidualSwinGroup, conv_residual

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


class SwinIR(nn.Module):
    def __init__(self, config: SwinIRConfig):
        super().__init__()
        self.config = cfg = config
        dim = cfg.embed_dim
        self.window_size = cfg.window_size
        self.upscale = cfg.upscale
        self.img_range = cfg.img_range
        mean = cfg.rgb_mean if cfg.in_chans == 3 else (0.0,)
        # Not in the file (a plain attribute in the reference); non-persistent so strict loading ignores it.
        self.register_buffer("rgb_mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)

        self.conv_first = nn.Conv2d(cfg.in_chans, dim, 3, 1, 1)
        # The reference's PatchEmbed has no weights beyond this LayerNorm; a ModuleDict keeps the key
        # `patch_embed.norm.*` without an empty wrapper class.
        self.patch_embed = nn.ModuleDict({"norm": nn.LayerNorm(dim)} if cfg.patch_norm else {})
        if cfg.ape:
            rows, cols = cfg.resolution
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, rows * cols, dim))
        self.layers = nn.ModuleList(
            ResidualSwinGroup(dim, cfg.resolution, depth, heads, cfg.window_size, cfg.mlp_ratio, cfg.qkv_bias,
                              cfg.qk_scale, cfg.resi_connection)
            for depth, heads in zip(cfg.depths, cfg.num_heads))
        self.norm = nn.LayerNorm(dim)
        self.conv_after_body = conv_residual(dim, cfg.resi_connection)

        feat = cfg.num_feat
        # Default slope 0.01 here (unlike the 0.2 of the head below): the reference's nn.LeakyReLU(inplace=True).
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(dim, feat, 3, 1, 1), nn.LeakyReLU())
        self.conv_up1 = nn.Conv2d(feat, feat, 3, 1, 1)
        if cfg.upscale == 4:
            self.conv_up2 = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(feat, cfg.in_chans, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2)

    def reset_parameters(self) -> None:
        """The reference's initialisation: truncated normal (std 0.02) Linear weights and bias tables, zero Linear
        biases, unit LayerNorms; convolutions keep PyTorch's default."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Conv2d):
                module.reset_parameters()
            table = getattr(module, "relative_position_bias_table", None)
            if table is not None:
                nn.init.trunc_normal_(table, std=0.02)
        if self.config.ape:
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, H*W, C)
        if "norm" in self.patch_embed:
            tokens = self.patch_embed["norm"](tokens)
        if self.config.ape:
            if tokens.shape[1] != self.absolute_pos_embed.shape[1]:
                raise ValueError(f"ape: the absolute position embedding fits {self.config.resolution} feature maps "
                                 f"only, got {(h, w)}")
            tokens = tokens + self.absolute_pos_embed
        mask_cache: dict = {}
        for layer in self.layers:
            tokens = layer(tokens, (h, w), mask_cache)
        return self.norm(tokens).transpose(1, 2).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in_chans, H, W) in [0, 1] -> (B, in_chans, upscale*H, upscale*W), not clamped."""
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % self.window_size, -w % self.window_size
        if pad_h >= h or pad_w >= w:
            raise ValueError(f"input {h}x{w} is too small: reflect padding to a multiple of {self.window_size} "
                             f"needs sides larger than the padding")
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")  # edge pixel not repeated
        mean = self.rgb_mean.to(x.dtype)
        x = (x - mean) * self.img_range

        f0 = self.conv_first(x)
        f = self.conv_after_body(self.forward_features(f0)) + f0
        f = self.conv_before_upsample(f)
        f = self.lrelu(self.conv_up1(F.interpolate(f, scale_factor=2, mode="nearest")))
        if self.upscale == 4:
            f = self.lrelu(self.conv_up2(F.interpolate(f, scale_factor=2, mode="nearest")))
        out = self.conv_last(self.lrelu(self.conv_hr(f)))
        out = out / self.img_range + mean
        return out[..., :h * self.upscale, :w * self.upscale]
