"""DalleBart configuration, read from the checkpoint's `config.json` (what `save_pretrained` wrote).

Only the DALL·E Mega architecture is implemented: GLU feed-forward, NormFormer layer norms, no biases, learned absolute
positions, untied lm_head, plain softmax attention. A config asking for any other variant of dalle-mini's research
flags is refused with the list of offending keys, rather than silently computing something else.
"""
from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass

# flag -> the only value this implementation computes (dalle-mini's defaults for DALL·E Mega)
REQUIRED_FLAGS = {
    "use_glu": True,
    "ln_positions": "normformer",
    "ln_type": "layernorm",
    "use_bias": False,
    "use_head_scale": False,
    "tie_word_embeddings": False,
    "use_absolute_position_embeddings": True,
    "use_alibi": False,
    "use_swin_position_embeddings": False,
    "use_cosine_attention": False,
    "use_deepnet_scaling": False,
    "use_subln_init": False,
    "sinkhorn_iters": 1,
    "activation_function": "gelu",
}


@dataclass(frozen=True)
class DalleBartConfig:
    d_model: int
    encoder_layers: int
    decoder_layers: int
    encoder_attention_heads: int
    decoder_attention_heads: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    encoder_vocab_size: int
    image_vocab_size: int  # mega: 16415 = 16384 codes + 31 special/padding ids; logits have one more row
    max_text_length: int
    image_length: int
    decoder_start_token_id: int  # image "BOS" fed at decoder position 0 (mega: 16384)
    bos_token_id: int  # bos = eos = pad on the image side (mega: 16385)
    eos_token_id: int
    pad_token_id: int
    scale_embedding: bool = False
    use_final_ln_encoder: bool = True
    use_final_ln_decoder: bool = True
    force_ln_scale: bool = False  # True: the normally bias-only layer norms also store a scale
    text_pad_token_id: int = 1  # BART tokenizer <pad>; not in config.json (its pad_token_id is the image pad)

    @property
    def image_codebook_size(self) -> int:
        """Ids below this are VQGAN codes; dalle-mini puts every special image id right after the codebook."""
        return min(self.decoder_start_token_id, self.bos_token_id, self.eos_token_id, self.pad_token_id)

    @property
    def num_logits(self) -> int:
        return self.image_vocab_size + 1

    @classmethod
    def from_dict(cls, raw: dict) -> "DalleBartConfig":
        unsupported = {k: raw[k] for k, want in REQUIRED_FLAGS.items() if k in raw and raw[k] != want}
        if raw.get("ln_positions", "normformer") == "postln":
            unsupported["ln_positions"] = "postln"
        if unsupported:
            raise ValueError(f"unsupported DalleBart variant (only the DALL·E Mega architecture is implemented): "
                             f"{unsupported}; expected {({k: REQUIRED_FLAGS[k] for k in unsupported})}")
        names = cls.__dataclass_fields__
        missing = [n for n, f in names.items() if f.default is MISSING and n not in raw]
        if missing:
            raise ValueError(f"DalleBart config lacks {missing}")
        config = cls(**{n: raw[n] for n in names if n in raw})
        config.validate()
        return config

    @classmethod
    def from_json(cls, path) -> "DalleBartConfig":
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def validate(self):
        for heads in (self.encoder_attention_heads, self.decoder_attention_heads):
            if self.d_model % heads:
                raise ValueError(f"d_model {self.d_model} is not divisible by {heads} attention heads")
        if self.image_codebook_size < 1 or max(self.decoder_start_token_id, self.bos_token_id) >= self.num_logits:
            raise ValueError(f"special image ids (start {self.decoder_start_token_id}, bos/eos/pad "
                             f"{self.bos_token_id}) must lie inside the {self.num_logits} decoder ids")

    def to_dict(self) -> dict:
        """The config.json a `save_pretrained` of this model would write (architecture keys + fixed flags)."""
        out = {k: v for k, v in asdict(self).items() if k != "text_pad_token_id"}
        out.update(REQUIRED_FLAGS)
        out.update(model_type="dallebart", architectures=["eBart"], is_encoder_decoder=True, use_scan=True,
                   max_length=self.image_length + 1, min_length=self.image_length + 1, do_sample=True)
        return out


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
