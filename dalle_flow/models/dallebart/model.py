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

    def step_logits(self, ids: torch.Tensor, position: int, cache: DecoderCache) -> torch.Tensor:
        """(R,) previous tokens at `position` -> (R, image_vocab_size + 1) next-token logits."""
        return self.lm_head(self.decoder.step(ids, position, cache))


def tiny_config(image_codebook_size: int = 64, encoder_vocab_size: int = 50272, max_text_length: int = 64,
                d_model: int = 64, layers: int = 2, heads: int = 4, image_length: int = 256) -> DalleBartConfig:
    """A small DalleBart with the real special-id conventions: codes 0..codebook-1, decoder start = codebook,
    bos/eos/pad = codebook + 1, 31 non-code ids (as mega's 16415 = 16384 + 31), 256 image tokens (a 16x16 VQGAN grid,
    so a tiny VQGAN decodes them to 256x256 images). The codebook defaults to the tiny VQGAN's 64 entries (pass 16384
    to pair it with the real VQGAN); the text vocabulary is mega's, so any BART tokenizer id fits.
    """
    return DalleBartConfig(
        d_model=d_model, encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=heads,
        decoder_attention_heads=heads, encoder_ffn_dim=2 * d_model, decoder_ffn_dim=2 * d_model,
        encoder_vocab_size=encoder_vocab_size, image_vocab_size=image_codebook_size + 31,
        max_text_length=max_text_length, image_length=image_length, decoder_start_token_id=image_codebook_size,
        bos_token_id=image_codebook_size + 1, eos_token_id=image_codebook_size + 1,
        pad_token_id=image_codebook_size + 1,
    )


@torch.no_grad()
def randomize_(model: DalleBart, seed: int = 0) -> DalleBart:
    """Deterministic random weights from a private generator (the global torch RNG is left alone). Every tensor is
    random, layer-norm scales and biases included, so each one influences the output."""
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
        if name.endswith(".bias"):  # layer-norm shifts
            value = 0.1 * noise
        elif param.ndim == 1:  # layer-norm scales
            value = 1.0 + 0.1 * noise
        elif "embed" in name:
            value = noise
        else:  # [in, out] kernels: unit-variance outputs for unit-variance inputs
            value = noise / param.shape[0] ** 0.5
        param.copy_(value)
    return model


def tiny_dallebart(seed: int = 0, device="cpu", dtype: torch.dtype = torch.float32, **config_overrides) -> DalleBart:
    """The tiny preset's DalleBart: d_model 64, 2+2 layers, 256 image tokens over a 64-code codebook (the tiny VQGAN's),
    real special-id conventions, deterministic random weights."""
    model = DalleBart(tiny_config(**config_overrides))
    return randomize_(model, seed).to(device=device, dtype=dtype).eval().requires_grad_(False)
