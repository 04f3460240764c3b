"""Building blocks shared by the DalleBart encoder and decoder: layer norm, attention, GLU feed-forward.

Attention has no biases; heads split the feature axis as (head, head_dim); scores are scaled by head_dim**-0.5 and
masked keys are excluded from the softmax (the reference adds -inf). All three attention flavours go through
`scaled_dot_product_attention`, so half precision on a GPU uses the fused kernels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm(nn.Module):
    """eps 1e-5 layer norm whose scale may be absent: NormFormer's extra norms in dalle-mini store only a bias."""

    def __init__(self, dim: int, scale: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim)) if scale else None
        self.bias = nn.Parameter(torch.zeros(dim))
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (self.dim,), self.weight, self.bias, 1e-5)


class Dense(nn.Module):
    """Bias-free projection x @ kernel with the kernel stored [in, out], as in the Flax checkpoint: loading is a
    straight copy, and the skinny matmuls of token-by-token decoding run faster on CPUs in this layout than
    nn.Linear's x @ weight.T (about 1.4x for the lm_head at 8 rows with MKL)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.kernel = nn.Parameter(torch.empty(d_in, d_out))
        nn.init.normal_(self.kernel, std=d_in ** -0.5)

    def forward(self, x: torch.Tensor, outputs: int | None = None) -> torch.Tensor:
        """x @ kernel; with `outputs`, only the first `outputs` columns (the others are not read)."""
        return x @ (self.kernel if outputs is None else self.kernel[:, :outputs])


class Attention(nn.Module):
    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj = Dense(d_model, d_model)
        self.k_proj = Dense(d_model, d_model)
        self.v_proj = Dense(d_model, d_model)
        self.out_proj = Dense(d_model, d_model)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, H*D) -> (B, H, T, D)
        b, t, _ = x.shape
        return x.view(b, t, self.heads, -1).transpose(1, 2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, T, D) -> (B, T, H*D)
        b, _, t, _ = x.shape
        return x.transpose(1, 2).reshape(b, t, -1)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        """Self-attention over a whole sequence. key_mask: (B, T) bool, False = ignored key."""
        q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(x)), self._split(self.v_proj(x))
        mask = None
        if key_mask is not None:
            mask = key_mask[:, None, None, :]
            if causal:
                t = x.shape[1]
                mask = mask & torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
                causal = False
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        return self.out_proj(self._merge(out))

    def step(self, x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, position: torch.Tensor,
             visible: torch.Tensor | None) -> torch.Tensor:
        """Causal self-attention for one new token per row, writing its key/value into a preallocated cache.

        x: (R, 1, d_model); caches: (R, H, S, D); position: 0-d long tensor on the device. visible: (1, S) bool, True
        for cache slots 0..position: every shape is then fixed for the whole sampling run and the position is never
        read on the host, so the step can be captured once (CUDA graph) and replayed for every token; the slots after
        `position` hold zeros or a previous run's keys and get zero weight. visible None: the caller passed caches
        cut to slots 0..position (eager decoding, where the masked slots would only cost time).
        """
        rows = x.shape[0]
        # one query per row: (R, 1, H*D) and (R, H, 1, D) share their memory layout, so plain views replace the
        # transposes of _split/_merge (fewer tiny ops in a step that is launched 24 times per token)
        q, k, v = (proj(x).view(rows, self.heads, 1, -1) for proj in (self.q_proj, self.k_proj, self.v_proj))
        index = position.view(1)
        k_cache.index_copy_(2, index, k)
        v_cache.index_copy_(2, index, v)
        out = F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=visible)
        return self.out_proj(out.reshape(rows, 1, -1))

    def project_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the encoder output, computed once per prompt: (G, T, d) -> 2 x (G, H, T, D)."""
        return self._split(self.k_proj(context)), self._split(self.v_proj(context))

    def cross(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """Cross-attention where G prompts are each shared by n consecutive rows of x.

        x: (G*n, Tq, d_model); k, v: (G, H, T, D); key_mask: (G, 1, 1, T), bool (False = ignored key) or the
        equivalent additive float mask (0 / -inf, what attention turns a bool mask into; the decoding cache keeps it
        ready, see `key_bias`). The n*Tq queries of a group all read the same keys, so they are folded into the query
        axis: one (n*Tq x T) attention per prompt instead of n copies of the keys.
        """
        rows, tq, _ = x.shape
        g = k.shape[0]
        q = self.q_proj(x).view(g, (rows // g) * tq, self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)  # (G, H, n*Tq, D)
        return self.out_proj(out.transpose(1, 2).reshape(rows, tq, -1))


def key_bias(key_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(G, T) bool key mask -> (G, 1, 1, T) additive mask, 0 where kept and -inf where masked: the float mask
    `scaled_dot_product_attention` derives from a bool one on every call, built once instead."""
    bias = torch.zeros(key_mask.shape, dtype=dtype, device=key_mask.device).masked_fill_(~key_mask, float("-inf"))
    return bias[:, None, None, :]


class GLU(nn.Module):
    """x -> Dense_2(LN_b(gelu(Dense_0(LN_a x)) * Dense_1(LN_a x))); both norms bias-only in DALL·E Mega."""

    def __init__(self, d_model: int, ffn_dim: int, ln_scale: bool = False):
        super().__init__()
        self.ln_in = LayerNorm(d_model, scale=ln_scale)
        self.fc_gelu = Dense(d_model, ffn_dim)
        self.fc_gate = Dense(d_model, ffn_dim)
        self.ln_mid = LayerNorm(ffn_dim, scale=ln_scale)
        self.fc_out = Dense(ffn_dim, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln_in(x)
        x = F.gelu(self.fc_gelu(x)) * self.fc_gate(x)  # exact erf gelu, as flax's nn.gelu(approximate=False)
        return self.fc_out(self.ln_mid(x))
