"""DalleBart image-token decoder, with a preallocated key/value cache for sampling one token at a time.

Rows of a decoding batch are grouped by prompt: G prompts (e.g. the text and the empty unconditional text), each
shared by n consecutive rows (the images). Cross-attention keys/values are computed once per prompt (G of them, not
G*n) when the cache is built, only over the text positions up to the last one some prompt uses (the padding after
it is masked for every prompt), and self-attention keys/values are written in place at each step.

`step` has the same shapes at every position (the position is a device tensor, attention spans the whole cache with
the later slots masked), so a sampling loop can capture it once and replay it for each token (see decode_loop.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dalle_flow.models.dallebart.attention import GLU, Attention, LayerNorm, key_bias
from dalle_flow.models.dallebart.config import DalleBartConfig


@dataclass
class DecoderCache:
    self_k: list[torch.Tensor]  # per layer (R, H, image_length, D), written at each step
    self_v: list[torch.Tensor]
    cross_k: list[torch.Tensor]  # per layer (G, H, T, D), fixed for the whole sampling run
    cross_v: list[torch.Tensor]
    cross_bias: torch.Tensor  # (G, 1, 1, T) additive key mask: -inf at padded text positions, else 0

    @property
    def rows(self) -> int:
        return self.self_k[0].shape[0]

    @property
    def groups(self) -> int:
        return self.cross_bias.shape[0]


class DecoderLayer(nn.Module):
    def __init__(self, config: DalleBartConfig):
        super().__init__()
        d, heads, scale = config.d_model, config.decoder_attention_heads, config.force_ln_scale
        self.pre_self_attn_ln = LayerNorm(d, scale=scale)
        self.self_attn = Attention(d, heads)
        self.self_attn_ln = LayerNorm(d)
        self.pre_cross_attn_ln = LayerNorm(d, scale=scale)
        self.cross_attn = Attention(d, heads)
        self.cross_attn_ln = LayerNorm(d)
        self.glu = GLU(d, config.decoder_ffn_dim, ln_scale=scale)

    def _cross_and_glu(self, h, k, v, key_mask):
        h = h + self.cross_attn_ln(self.cross_attn.cross(self.pre_cross_attn_ln(h), k, v, key_mask))
        return h + self.glu(h)

    def forward(self, h: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """Whole sequence at once (teacher forcing): causal self-attention, no cache."""
        h = h + self.self_attn_ln(self.self_attn(self.pre_self_attn_ln(h), causal=True))
        return self._cross_and_glu(h, k, v, key_mask)

    def step(self, h, self_k, self_v, position: torch.Tensor, visible: torch.Tensor, k, v, key_mask) -> torch.Tensor:
        h = h + self.self_attn_ln(self.self_attn.step(self.pre_self_attn_ln(h), self_k, self_v, position, visible))
        return self._cross_and_glu(h, k, v, key_mask)


class Decoder(nn.Module):
    def __init__(self, config: DalleBartConfig):
        super().__init__()
        d = config.d_model
        self.config = config
        self.embed_scale = d ** 0.5 if config.scale_embedding else 1.0
        self.embed_tokens = nn.Embedding(config.num_logits, d)  # image ids + the decoder start id
        self.embed_positions = nn.Embedding(config.image_length, d)
        self.layernorm_embedding = LayerNorm(d)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.decoder_layers))
        self.final_ln = LayerNorm(d, scale=config.force_ln_scale) if config.use_final_ln_decoder else None

    def _embed(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.layernorm_embedding(self.embed_tokens(ids) * self.embed_scale + positions)

    def _final(self, h: torch.Tensor) -> torch.Tensor:
        return h if self.final_ln is None else self.final_ln(h)

    def forward(self, ids: torch.Tensor, encoder_hidden: torch.Tensor, encoder_mask: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: (B, S) decoder ids, (B, T, d) encoder output, (B, T) mask -> (B, S, d) hidden states."""
        h = self._embed(ids, self.embed_positions.weight[:ids.shape[1]])
        key_mask = encoder_mask.to(torch.bool)[:, None, None, :]
        for layer in self.layers:
            k, v = layer.cross_attn.project_kv(encoder_hidden)
            h = layer(h, k, v, key_mask)
        return self._final(h)

    def init_cache(self, encoder_hidden: torch.Tensor, encoder_mask: torch.Tensor, rows: int) -> DecoderCache:
        """Allocate the cache for `rows` decoding rows over G = encoder_hidden.shape[0] prompts (rows % G == 0).
        Self-attention slots start at zero: masked slots get zero weight, and zero times a stale NaN would not be.
        Text positions after the last one any prompt attends to are dropped: every prompt gives them zero weight, so
        each step reads fewer cross-attention keys/values for the same result."""
        g = encoder_hidden.shape[0]
        if rows % g:
            raise ValueError(f"rows ({rows}) must be a multiple of the number of prompts ({g})")
        key_mask = encoder_mask.to(torch.bool)
        used = key_mask.any(dim=0).nonzero()
        text_length = int(used.max()) + 1 if len(used) else key_mask.shape[1]  # read once per request, not per step
        key_mask, encoder_hidden = key_mask[:, :text_length], encoder_hidden[:, :text_length]
        cfg = self.config
        heads = cfg.decoder_attention_heads
        shape = (rows, heads, cfg.image_length, cfg.d_model // heads)
        like = dict(dtype=encoder_hidden.dtype, device=encoder_hidden.device)
        cross = [layer.cross_attn.project_kv(encoder_hidden) for layer in self.layers]
        return DecoderCache(
            self_k=[torch.zeros(shape, **like) for _ in self.layers],
            self_v=[torch.zeros(shape, **like) for _ in self.layers],
            cross_k=[k for k, _ in cross], cross_v=[v for _, v in cross],
            cross_bias=key_bias(key_mask, encoder_hidden.dtype),
        )

    def step(self, ids: torch.Tensor, position: torch.Tensor, cache: DecoderCache,
             length: int | None = None) -> torch.Tensor:
        """One token per row at `position` (a 0-d long tensor on the model's device, 0..image_length - 1; it is not
        checked here, which would read it on the host): (R,) ids -> (R, d) hidden states. R may be less than
        cache.rows (a smaller last batch): the first R rows of the cache are used, still grouped as G blocks of
        R // G rows.

        length None: static shapes (self-attention over every cache slot, the later ones masked), for capture.
        length = position + 1, known on the host: attention over the filled slots only, the faster eager form."""
        rows = ids.shape[0]
        if rows % cache.groups or rows > cache.rows:
            raise ValueError(f"{rows} rows do not fit a cache of {cache.rows} rows over {cache.groups} prompts")
        slots = cache.self_k[0].shape[2] if length is None else length
        visible = (torch.arange(slots, device=ids.device) <= position)[None] if length is None else None
        h = self._embed(ids[:, None], self.embed_positions(position.view(1)))
        for i, layer in enumerate(self.layers):
            h = layer.step(h, cache.self_k[i][:rows, :, :slots], cache.self_v[i][:rows, :, :slots], position,
                           visible, cache.cross_k[i], cache.cross_v[i], cache.cross_bias)
        return self._final(h)[:, 0]
