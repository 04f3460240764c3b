"""DalleBart: text encoder + image-token decoder + untied lm_head (DALL·E Mega's architecture)."""
from __future__ import annotations

import torch
from torch import nn

from dalle_flow.models.dallebart.attention import Dense
from dalle_flow.models.dallebart.config import DalleBartConfig
from dalle_flow.models.dallebart.decoder import Decoder, DecoderCache
from dalle_flow.models.dallebart.encoder import Encoder


class DalleBart(nn.Module):
    def __init__(self, config: DalleBartConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.lm_head = Dense(config.d_model, config.num_logits)

    @property
    def device(self) -> torch.device:
        return self.lm_head.kernel.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.kernel.dtype

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                decoder_input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing: -> (logits (B, S, image_vocab_size + 1), encoder output (B, T, d_model))."""
        encoded = self.encode(input_ids, attention_mask)
        return self.lm_head(self.decoder(decoder_input_ids, encoded, attention_mask)), encoded

    def init_cache(self, encoder_hidden: torch.Tensor, encoder_mask: torch.Tensor, rows: int) -> DecoderCache:
        return self.decoder.init_cache(encoder_hidden, encoder_mask, rows)

    def step_logits(self, ids: torch.Tensor, position: torch.Tensor, cache: DecoderCache,
                    length: int | None = None, vocab: int | None = None) -> torch.Tensor:
        """(R,) previous tokens at `position` (0-d long tensor on the device) -> (R, image_vocab_size + 1) logits.
        length: see Decoder.step (None: static shapes for capture; position + 1: eager). vocab: the logits of ids
        0..vocab - 1 only, for a sampler that masks the rest anyway (the other columns of the head are not read)."""
        return self.lm_head(self.decoder.step(ids, position, cache, length), outputs=vocab)
