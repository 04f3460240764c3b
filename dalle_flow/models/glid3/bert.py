"""LDM BERTEmbedder (GLID-3 XL's text encoder, bert.pt) and its bert-base-uncased WordPiece tokenizer.

Not a HuggingFace BERT: an x-transformers style pre-norm encoder trained from scratch by CompVis; only the tokenizer
is bert-base-uncased. Module names follow the checkpoint keys (`transformer.attn_layers.layers.{i}.{0,1}`).

    bert = load_bert_embedder("bert.pt", "vocab.txt")
    context = bert.encode(["a cyberpunk girl"])       # (1, 77, 1280) float32
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dalle_flow.models.glid3.config import BertConfig

class Attention(nn.Module):
    """Multi-head self-attention without any mask: padding positions are attended to, as in the reference."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads = heads
        inner = heads * dim_head
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        # (b, n, h*d) -> (b, h, n, d); SDPA's default scale is d^-0.5, the reference's
        q, k, v = (proj(x).view(b, n, self.heads, -1).transpose(1, 2) for proj in (self.to_q, self.to_k, self.to_v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int):
        super().__init__()
        # index layout net.0.0 / net.2 is the checkpoint's (index 1 was a dropout)
        self.net = nn.Sequential(nn.Sequential(nn.Linear(dim, dim * mult), nn.GELU()), nn.Identity(),
                                 nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PreNormResidual(nn.ModuleList):
    """[LayerNorm, block]: x + block(norm(x)); a list so the keys read `.0.weight` and `.1.<block>`."""

    def __init__(self, dim: int, block: nn.Module):
        super().__init__([nn.LayerNorm(dim), block])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm, block = self
        return x + block(norm(x))


class AttentionLayers(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        blocks = {"a": lambda: Attention(config.n_embed, config.heads, config.dim_head),
                  "f": lambda: FeedForward(config.n_embed, config.ff_mult)}
        self.layers = nn.ModuleList(PreNormResidual(config.n_embed, blocks[t]()) for t in config.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class PositionEmbedding(nn.Module):
    def __init__(self, dim: int, max_seq_len: int):
        super().__init__()
        self.emb = nn.Embedding(max_seq_len, dim)

    def forward(self, n: int) -> torch.Tensor:
        return self.emb.weight[:n]


class TextTransformer(nn.Module):
    """x-transformers TransformerWrapper(return_embeddings=True) with an Encoder: learned absolute positions."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.token_emb = nn.Embedding(config.vocab_size, config.n_embed)
        self.pos_emb = PositionEmbedding(config.n_embed, config.max_seq_len)
        self.attn_layers = AttentionLayers(config)
        self.norm = nn.LayerNorm(config.n_embed)
        if config.with_logits:
            self.to_logits = nn.Linear(config.n_embed, config.vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, n) int64 ids, n <= max_seq_len -> (N, n, n_embed) embeddings."""
        x = self.token_emb(tokens) + self.pos_emb(tokens.shape[1])
        return self.norm(self.attn_layers(x))


class BertEmbedder(nn.Module):
    def __init__(self, config: BertConfig, tokenizer=None):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.transformer = TextTransformer(config)

    @property
    def device(self) -> torch.device:
        return self.transformer.token_emb.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.token_emb.weight.dtype

    def tokenizer_batch(self, texts: list[str]):
        """The tokenizer call ldm's BERTTokenizer makes (a BatchEncoding with input_ids, length, ...)."""
        if self.tokenizer is None:
            raise ValueError("this BertEmbedder has no tokenizer; pass token ids to forward() instead")
        if isinstance(texts, str):
            texts = [texts]
        return self.tokenizer(list(texts), truncation=True, max_length=self.config.max_seq_len, return_length=True,
                              return_overflowing_tokens=False, padding="max_length", return_tensors="pt")

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """[CLS] pieces [SEP] padded with [PAD] to max_seq_len (longer prompts truncated): (N, 77) int64 on the CPU."""
        return self.tokenizer_batch(texts)["input_ids"].long()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[1] > self.config.max_seq_len:
            raise ValueError(f"at most {self.config.max_seq_len} tokens per row, got {tokens.shape[1]}")
        return self.transformer(tokens.to(self.device))

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """Prompts -> (N, max_seq_len, n_embed) float32 context for the UNet's cross-attention."""
        return self(self.tokenize(texts)).float()
