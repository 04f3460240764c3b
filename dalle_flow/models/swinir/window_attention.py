"""Window multi-head self-attention of Swin, with its relative position bias and shifted-window mask.

Tokens attend only inside non-overlapping `window x window` squares. Every other block rolls the feature map by half a
window first, so windows straddle the previous block's borders; the roll wraps pixels from the bottom/right edge to
the top/left, and the mask stops those wrapped pixels from attending to pixels they are not next to in the image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The reference masks with -100, not -inf: exp(-100) is ~4e-44, so masked weights are tiny but not exactly zero, and
# the value survives fp16 (-inf would too, but -100 is what the released model was trained and evaluated with).
MASK_VALUE = -100.0


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/w * W/w, w*w, C), windows in row-major order inside each image."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_merge(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """Inverse of window_partition: (B * nW, w*w, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


def relative_position_index(window: int, device=None) -> torch.Tensor:
    """(w*w, w*w) int64: for each (query, key) pair in a window, the row of the bias table holding its offset.

    Offsets (dy, dx) range over [-(w-1), w-1]^2; the table is laid out row-major over (dy, dx), (2w-1)^2 rows.
    """
    rows = torch.arange(window, device=device).repeat_interleave(window)  # (N,) row of each token
    cols = torch.arange(window, device=device).repeat(window)
    dy = rows[:, None] - rows[None, :] + (window - 1)
    dx = cols[:, None] - cols[None, :] + (window - 1)
    return dy * (2 * window - 1) + dx


def shifted_window_mask(height: int, width: int, window: int, shift: int, device=None) -> torch.Tensor:
    """(nW, w*w, w*w) float32 additive mask (0 or MASK_VALUE) for a feature map rolled by -shift on both axes.

    After the roll, the last `window` rows split into two bands: rows that were already there and rows that wrapped
    around from the top (the last `shift` rows). Same for columns. Two tokens may attend to each other only when
    they fall in the same (row band, column band) region.
    """

    def bands(n):
        idx = torch.arange(n, device=device)
        return (idx >= n - window).long() + (idx >= n - shift).long()  # 0: interior, 1: kept edge, 2: wrapped

    region = bands(height)[:, None] * 3 + bands(width)[None, :]  # (H, W) region label
    region = window_partition(region.view(1, height, width, 1), window).squeeze(-1)  # (nW, N)
    different = region[:, None, :] != region[:, :, None]  # (nW, N, N)
    return torch.zeros(different.shape, device=device).masked_fill_(different, MASK_VALUE)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, window: int, num_heads: int, qkv_bias: bool = True, qk_scale: float | None = None):
        super().__init__()
        self.window = window
        self.num_heads = num_heads
        # `or`, as in the reference: qk_scale=0 (or None) means the default head_dim ** -0.5
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        # Stored in the released file, so it is a persistent buffer even though it is a fixed function of `window`.
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B * nW, N, C) windows of N = w*w tokens; mask: (nW, N, N) or None."""
        bw, n, c = x.shape
        heads = self.num_heads
        q, k, v = self.qkv(x).view(bw, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)  # (B*nW, h, N, d)

        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, heads).permute(2, 0, 1).unsqueeze(0)  # (1, h, N, N)
        if mask is not None:
            windows = mask.shape[0]
            bias = bias + mask.to(bias.dtype).unsqueeze(1)  # (nW, h, N, N)
            # Windows are ordered image-major, so image i's windows are rows i*nW .. (i+1)*nW-1. For one image this
            # expand/reshape is a view; for a batch it copies the mask once per image.
            bias = bias.unsqueeze(0).expand(bw // windows, -1, -1, -1, -1).reshape(bw, heads, n, n)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))
