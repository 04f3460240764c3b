"""LDM BERTEmbedder (GLID-3 XL's text encoder, bert.pt) and its bert-base-uncased WordPiece tokenizer.

Not a HuggingFace BERT: an x-transformers style pre-norm encoder trained from scratch by CompVis; only the tokenizer
is bert-base-uncased. Module names follow the checkpoint keys (`transformer.attn_layers.layers.{i}.{0,1}`).

    bert = load_bert_embedder("bert.pt", "vocab.txt")
    context = bert.encode(["a cyberpunk girl"])       # (1, 77, 1280) float32
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dalle_flow.models.glid3.unpickle import load_checkpoint
from dalle_flow.runtime.state_dict import load_state_dict_strict

DIM_HEAD = 64  # x-transformers' default head width; ldm never overrides it (nor heads=8)


@dataclass(frozen=True)
class BertConfig:
    n_embed: int = 1280
    n_layer: int = 32
    vocab_size: int = 30522
    max_seq_len: int = 77
    heads: int = 8
    dim_head: int = DIM_HEAD
    ff_mult: int = 4
    layer_types: tuple[str, ...] | None = None  # 'a' attention / 'f' feed-forward; None = ('a', 'f') * n_layer
    with_logits: bool = False  # keep the unused `to_logits` head (only to mirror the file's keys)

    @property
    def layers(self) -> tuple[str, ...]:
        return self.layer_types if self.layer_types is not None else ("a", "f") * self.n_layer


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


# ---------------------------------------------------------------------------------------------------------------------
# tokenizer

SPECIAL_TOKENS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}  # bert-base-uncased ids


def make_tokenizer(vocab):
    """bert-base-uncased rules (lower case, accents stripped) over `vocab`: a vocab.txt path or a {piece: id} dict."""
    from transformers import BertTokenizerFast

    if isinstance(vocab, dict):
        size = len(vocab)
    else:
        with open(vocab, encoding="utf-8") as f:
            size = sum(1 for _ in f)
        vocab = str(vocab)
    # transformers >= 5 takes `vocab=`; its `vocab_file=` is silently ignored (a 5-token vocab)
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    if len(tokenizer) != size:
        raise RuntimeError(f"tokenizer built with {len(tokenizer)} entries from a {size}-entry vocab: this "
                           f"transformers version ignored the vocab (needs transformers >= 5)")
    return tokenizer


def tiny_vocab() -> dict[str, int]:
    """A deterministic WordPiece vocab laid out like bert-base-uncased (specials at 0/100-103, [unusedN] between).

    Every lower-case letter, digit and ASCII punctuation mark exists whole and as a '##' piece, so any ASCII prompt
    tokenizes without [UNK]; a few common prompt words give multi-letter pieces.
    """
    pieces = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    punctuation = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
    words = ["a", "an", "the", "of", "in", "on", "with", "and", "by", "at", "art", "cat", "dog", "girl", "city",
             "painting", "oil", "photo", "portrait", "red", "blue", "green", "sky", "sea", "night", "style",
             "digital", "detailed", "##ing", "##ed", "##s", "##er", "##station", "##punk", "cyber", "astronaut"]
    for piece in chars + punctuation + words + [f"##{c}" for c in chars]:
        if piece not in pieces:
            pieces.append(piece)
    return {piece: i for i, piece in enumerate(pieces)}


# ---------------------------------------------------------------------------------------------------------------------
# loading

_LAYER_KEY = re.compile(r"^transformer\.attn_layers\.layers\.(\d+)\.1\.(to_q|net\.0\.0)\.weight$")


def config_from_state_dict(sd: dict[str, torch.Tensor], dim_head: int = DIM_HEAD) -> BertConfig:
    """Sizes and the a/f layer pattern read off the tensors; heads = inner width / dim_head (64 in ldm)."""
    for key in ("transformer.token_emb.weight", "transformer.pos_emb.emb.weight", "transformer.norm.weight"):
        if key not in sd:
            raise ValueError(f"not an ldm BERTEmbedder state_dict: {key!r} is missing")
    vocab_size, n_embed = sd["transformer.token_emb.weight"].shape
    max_seq_len = sd["transformer.pos_emb.emb.weight"].shape[0]
    types: dict[int, str] = {}
    for key in sd:
        m = _LAYER_KEY.match(key)
        if m:
            types[int(m.group(1))] = "a" if m.group(2) == "to_q" else "f"
    if sorted(types) != list(range(len(types))):
        raise ValueError(f"attn_layers.layers indices are not 0..n-1 (found {sorted(types)})")
    layer_types = tuple(types[i] for i in range(len(types)))
    heads, ff_mult = 8, 4
    if "a" in layer_types:
        inner = sd[f"transformer.attn_layers.layers.{layer_types.index('a')}.1.to_q.weight"].shape[0]
        if inner % dim_head:
            raise ValueError(f"attention width {inner} is not a multiple of dim_head={dim_head}")
        heads = inner // dim_head
    if "f" in layer_types:
        hidden = sd[f"transformer.attn_layers.layers.{layer_types.index('f')}.1.net.0.0.weight"].shape[0]
        if hidden % n_embed:
            raise ValueError(f"feed-forward width {hidden} is not a multiple of n_embed={n_embed}")
        ff_mult = hidden // n_embed
    n_attn = layer_types.count("a")
    standard = layer_types == ("a", "f") * n_attn
    return BertConfig(n_embed=n_embed, n_layer=n_attn, vocab_size=vocab_size, max_seq_len=max_seq_len, heads=heads,
                      dim_head=dim_head, ff_mult=ff_mult, layer_types=None if standard else layer_types)


def load_bert_embedder(checkpoint_path, vocab_path, device: torch.device | str = "cpu",
                       dtype: torch.dtype = torch.float32, dim_head: int = DIM_HEAD) -> BertEmbedder:
    """bert.pt (plain state_dict; a {'state_dict': ...} wrapper works too) + bert-base-uncased vocab.txt.

    Strict: every tensor must fit. `transformer.to_logits.*` (an unused LM head, 30522x1280 in bert.pt) is checked
    against the vocab size and then dropped instead of being kept in memory.
    """
    sd = dict(load_checkpoint(checkpoint_path).state_dict)
    config = config_from_state_dict(sd, dim_head)
    for key, shape in (("transformer.to_logits.weight", (config.vocab_size, config.n_embed)),
                       ("transformer.to_logits.bias", (config.vocab_size,))):
        if key in sd:
            if tuple(sd[key].shape) != shape:
                raise ValueError(f"{checkpoint_path}: {key} has shape {tuple(sd[key].shape)}, expected {shape}")
            del sd[key]
    tokenizer = make_tokenizer(vocab_path)
    if len(tokenizer) > config.vocab_size:
        raise ValueError(f"vocab {vocab_path} has {len(tokenizer)} entries but the embedding only "
                         f"{config.vocab_size} rows")
    with torch.device("meta"):
        model = BertEmbedder(config)
    load_state_dict_strict(model, {k: v.float() for k, v in sd.items()}, str(checkpoint_path), assign=True)
    model.tokenizer = tokenizer
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def tiny_bert_config() -> BertConfig:
    # dim_head stays 64 (ldm's fixed value) so a tiny model saved like bert.pt reloads with the same loader
    return BertConfig(n_embed=32, n_layer=2, vocab_size=len(tiny_vocab()), max_seq_len=77, heads=2, dim_head=DIM_HEAD)


def tiny_bert_embedder(seed: int = 0, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                       config: BertConfig | None = None) -> BertEmbedder:
    """Small BertEmbedder with deterministic random weights and an in-memory WordPiece vocab (no files)."""
    vocab = tiny_vocab()
    config = config or tiny_bert_config()
    if config.vocab_size < len(vocab):
        raise ValueError(f"vocab_size {config.vocab_size} < tiny vocab ({len(vocab)} entries)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertEmbedder(config, make_tokenizer(vocab))
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def full_bert_meta(config: BertConfig | None = None) -> BertEmbedder:
    """The full-size bert.pt model on the meta device, with the unused logits head, for key/shape checks."""
    config = config or BertConfig()
    with torch.device("meta"):
        return BertEmbedder(BertConfig(**{**config.__dict__, "with_logits": True}))
