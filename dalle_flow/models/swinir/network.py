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

import torch
import torch.nn.functional as F
from torch import nn

from dalle_flow.models.swinir.blocks import ResidualSwinGroup, conv_residual
from dalle_flow.models.swinir.config import SwinIRConfig

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
