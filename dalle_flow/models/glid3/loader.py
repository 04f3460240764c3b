"""Strict loaders of GLID-3 XL's checkpoints (finetune.pt, kl-f8.pt, bert.pt + vocab.txt), reading every size off the
tensors, and the tiny random models of the preset (`tiny_unet`, `tiny_kl_vae`, `tiny_bert_embedder`)."""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import torch

from dalle_flow.runtime.state_dict import load_state_dict_strict
from dalle_flow.models.glid3.bert import BertEmbedder
from dalle_flow.models.glid3.config import (DIM_HEAD, FINETUNE_CONFIG, TINY_UNET_CONFIG, BertConfig, KLConfig,
                                            UNetConfig, tiny_bert_config, tiny_kl_config)
from dalle_flow.models.glid3.kl_vae import AutoencoderKL
from dalle_flow.models.glid3.tokenizer import make_tokenizer, tiny_vocab
from dalle_flow.models.glid3.unet import UNet
from dalle_flow.models.glid3.unpickle import Checkpoint, load_checkpoint

def build_unet(config: UNetConfig, device="cpu", dtype: torch.dtype = torch.float32) -> UNet:
    """An uninitialised-for-inference UNet (torch default init); `device='meta'` allocates nothing."""
    with torch.device(device):
        model = UNet(config)
    return model.to(dtype=dtype).eval().requires_grad_(False)


def unet_from_state_dict(state_dict: dict, config: UNetConfig = FINETUNE_CONFIG, device="cpu",
                         dtype: torch.dtype = torch.float32) -> UNet:
    """Strict load: every tensor of the file used, every parameter filled, shapes equal; cast to `dtype`."""
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError("expected a flat state_dict of tensors (torch.save(model.state_dict()), like finetune.pt)")
    config = config.for_state_dict(state_dict)
    model = build_unet(config, device="meta", dtype=dtype)
    tensors = {k: v.to(device=device, dtype=dtype) for k, v in state_dict.items()}
    load_state_dict_strict(model, tensors, "state_dict", assign=True)
    return model.eval().requires_grad_(False)


def load_unet(path, config: UNetConfig = FINETUNE_CONFIG, device="cpu", dtype: torch.dtype = torch.float32) -> UNet:
    """Load a `finetune.pt`-style file (flat state_dict, un-prefixed keys) with weights_only unpickling."""
    state_dict = torch.load(Path(path), map_location="cpu", weights_only=True)
    try:
        return unet_from_state_dict(state_dict, config, device, dtype)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def tiny_unet(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0,
              context_dim: int = TINY_UNET_CONFIG.context_dim, clip_embed_dim: int | None = None) -> UNet:
    """Deterministic random tiny UNet (no files). `context_dim` must match the BERT embedder it is paired with."""
    config = replace(TINY_UNET_CONFIG, context_dim=context_dim, clip_embed_dim=clip_embed_dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = UNet(config)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


_ENCODER_LEVEL = re.compile(r"^encoder\.down\.(\d+)\.(block|attn)\.(\d+)\.")


def kl_config_from_state_dict(sd: dict[str, torch.Tensor], tanh_out: bool = False) -> KLConfig:
    """Every size read off the tensors: widths, levels, blocks per level, attention levels, latent channels."""
    def shape(key):
        if key not in sd:
            raise ValueError(f"not an AutoencoderKL state_dict: {key!r} is missing")
        return tuple(sd[key].shape)

    ch, in_channels = shape("encoder.conv_in.weight")[:2]
    levels: dict[int, int] = {}
    attn_levels = set()
    for key in sd:
        m = _ENCODER_LEVEL.match(key)
        if m:
            level, kind, idx = int(m.group(1)), m.group(2), int(m.group(3))
            if kind == "block":
                levels[level] = max(levels.get(level, 0), idx + 1)
            else:
                attn_levels.add(level)
    if not levels or sorted(levels) != list(range(len(levels))):
        raise ValueError(f"encoder.down levels are not 0..n-1: {sorted(levels)}")
    num_res_blocks = levels[0]
    if any(n != num_res_blocks for n in levels.values()):
        raise ValueError(f"encoder levels have different block counts: {levels}")
    ch_mult = []
    for level in range(len(levels)):
        out = shape(f"encoder.down.{level}.block.0.conv1.weight")[0]
        if out % ch:
            raise ValueError(f"encoder level {level} width {out} is not a multiple of ch={ch}")
        ch_mult.append(out // ch)
    z_channels = shape("decoder.conv_in.weight")[1]
    embed_dim = shape("post_quant_conv.weight")[1]
    out_ch = shape("decoder.conv_out.weight")[0]
    if shape("encoder.conv_out.weight")[0] != 2 * z_channels:
        raise ValueError("encoder.conv_out must produce 2*z_channels (double_z) for a KL autoencoder")
    return KLConfig(ch=ch, ch_mult=tuple(ch_mult), num_res_blocks=num_res_blocks, z_channels=z_channels,
                    embed_dim=embed_dim, in_channels=in_channels, out_ch=out_ch, attn_levels=tuple(sorted(attn_levels)),
                    tanh_out=tanh_out)


def _drop_loss(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # the training loss (LPIPS + discriminator) is stored beside the model in training checkpoints
    return {k: v for k, v in sd.items() if not k.startswith("loss.")}


def _pickled_tanh_out(ckpt: Checkpoint) -> bool:
    attrs = ckpt.attributes("decoder")
    if attrs.get("give_pre_end", False):
        raise ValueError("the pickled decoder has give_pre_end=True (returns features, not images); unsupported")
    return bool(attrs.get("tanh_out", False))


def load_kl_vae(path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> AutoencoderKL:
    """Load kl-f8.pt (pickled AutoencoderKL), a plain state_dict, or a {'state_dict': ...} checkpoint.

    The pickled module is read with the restricted unpickler (no ldm / pytorch_lightning needed, no code run).
    `loss.*` tensors are dropped; every other tensor must fit the model built from the tensors' own shapes.
    """
    ckpt = load_checkpoint(path)
    sd = _drop_loss(ckpt.state_dict)
    config = kl_config_from_state_dict(sd, tanh_out=_pickled_tanh_out(ckpt))
    embed_dim = ckpt.attributes().get("embed_dim")
    if embed_dim is not None and int(embed_dim) != config.embed_dim:
        raise ValueError(f"pickled embed_dim={embed_dim} disagrees with post_quant_conv ({config.embed_dim})")
    with torch.device("meta"):
        model = AutoencoderKL(config)
    load_state_dict_strict(model, {k: v.float() for k, v in sd.items()}, f"{path}", assign=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def tiny_kl_vae(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0,
                config: KLConfig | None = None) -> AutoencoderKL:
    """Small AutoencoderKL with deterministic random weights (no files): f8, 4 latent channels."""
    config = config or tiny_kl_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoencoderKL(config)
        # keep the latents of random weights in a sane range: shrink the logvar rows so samples stay near the mean
        with torch.no_grad():
            model.quant_conv.bias[config.embed_dim:] -= 4.0
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def full_kl_f8_meta(config: KLConfig | None = None) -> AutoencoderKL:
    """The full-size kl-f8 on the meta device (no memory), for key/shape checks."""
    with torch.device("meta"):
        return AutoencoderKL(config or KLConfig())


_LAYER_KEY = re.compile(r"^transformer\.attn_layers\.layers\.(\d+)\.1\.(to_q|net\.0\.0)\.weight$")


def bert_config_from_state_dict(sd: dict[str, torch.Tensor], dim_head: int = DIM_HEAD) -> BertConfig:
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
    config = bert_config_from_state_dict(sd, dim_head)
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


def tiny_bert_embedder(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0,
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
