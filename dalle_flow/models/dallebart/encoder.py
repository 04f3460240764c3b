"""DalleBart text encoder (BART encoder with NormFormer placement of the layer norms)."""
from __future__ import annotations

import torch
from torch import nn

from dalle_flow.models.dallebart.attention import GLU, Attention, LayerNorm
from dalle_flow.models.dallebart.config import DalleBartConfig


class EncoderLayer(nn.Module):
    def __init__(self, config: DalleBartConfig):
        super().__init__()
        d, scale = config.d_model, config.force_ln_scale
        self.pre_self_attn_ln = LayerNorm(d, scale=scale)
        self.self_attn = Attention(d, config.encoder_attention_heads)
        self.self_attn_ln = LayerNorm(d)
        self.glu = GLU(d, config.encoder_ffn_dim, ln_scale=scale)

    def forward(self, h: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        h = h + self.self_attn_ln(self.self_attn(self.pre_self_attn_ln(h), key_mask=key_mask))
        return h + self.glu(h)


class Encoder(nn.Module):
    def __init__(self, config: DalleBartConfig):
        super().__init__()
        d = config.d_model
        self.embed_scale = d ** 0.5 if config.scale_embedding else 1.0
        self.embed_tokens = nn.Embedding(config.encoder_vocab_size, d)
        self.embed_positions = nn.Embedding(config.max_text_length, d)
        self.layernorm_embedding = LayerNorm(d)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.encoder_layers))
        self.final_ln = LayerNorm(d, scale=config.force_ln_scale) if config.use_final_ln_encoder else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) ids + (B, T) mask (1 = real token) -> (B, T, d_model). Padded positions are computed too."""
        t = input_ids.shape[1]
        positions = torch.arange(t, device=input_ids.device)
        h = self.embed_tokens(input_ids) * self.embed_scale + self.embed_positions(positions)
        h = self.layernorm_embedding(h)
        key_mask = attention_mask.to(torch.bool)
        for layer in self.layers:
            h = layer(h, key_mask)
        return h if self.final_ln is None else self.final_ln(h)
