"""DALL·E Mega text -> images: processor (normaliser + BPE), DalleBart token sampling, VQGAN decoding."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from dalle_flow.parameters import Param, Params, seed_param
from dalle_flow.models.dallebart import DalleProcessor, generate_tokens, load_dallebart, tiny_dallebart
from dalle_flow.models.vqgan import load_vqgan, postprocess, tiny_vqgan

MAX_IMAGES = 32  # per prompt and request; sampled on the device in groups of `batch_size`
# The request parameters of `/` for DALL·E Mega. top_k defaults to 50 as dalle-mini's generate(top_k=None) fell back
# to; top_p 0.9 is DALL·E Flow's setting; the ranges keep every value meaningful (top_k up to the codebook size).
DALLE_PARAMS = Params((
    Param("num_images", "int", default=8, low=1, high=MAX_IMAGES),
    seed_param(),
    Param("cond_scale", "float", default=10.0, low=1.0, high=100.0),
    Param("top_k", "int", default=50, low=1, high=16384),
    Param("top_p", "float", default=0.9, low=0.01, high=1.0),
    Param("temperature", "float", default=1.0, low=0.01, high=10.0),
))
BATCH_SIZE = Param("batch_size", "int", default=16, low=1, high=MAX_IMAGES)  # a server setting, not a request's
VQGAN_DECODE_BATCH = 8  # VQGAN decoding at 256² is memory-hungry; decode a few images at a time


class DalleMegaPipeline:
    def __init__(self, processor: DalleProcessor, dalle, vqgan, batch_size: int = BATCH_SIZE.default):
        self.processor = processor
        self.dalle = dalle
        self.vqgan = vqgan  # float32 always: its output is quantised to uint8 and half precision shows as banding
        self.batch_size = BATCH_SIZE.convert(batch_size)

    @classmethod
    def from_files(cls, dalle_config: Path, dalle_checkpoint: Path, tokenizer_folder: Path, words_path: Path,
                   vqgan_config: Path, vqgan_checkpoint: Path, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32, batch_size: int = BATCH_SIZE.default) -> "DalleMegaPipeline":
        """DalleBart in `dtype`; the VQGAN always in float32, without its encoder (generation only decodes)."""
        dalle = load_dallebart((dalle_config, dalle_checkpoint), device, dtype)
        vqgan = load_vqgan((vqgan_config, vqgan_checkpoint), device, torch.float32, with_encoder=False)
        return cls(DalleProcessor.from_folder(tokenizer_folder, words_path), dalle, vqgan, batch_size)

    @classmethod
    def tiny(cls, device: torch.device | str = "cpu", batch_size: int = BATCH_SIZE.default) -> "DalleMegaPipeline":
        """Random tiny DalleBart + VQGAN (64 codes, 16×16 tokens -> 256×256), float32: tests and smoke demos only."""
        vqgan = tiny_vqgan(device)
        dalle = tiny_dallebart(device, image_codebook_size=vqgan.config.n_embed)
        return cls(DalleProcessor.tiny(), dalle, vqgan, batch_size)

    @torch.inference_mode()
    def generate(self, prompt: str, num_images: int, seed: int, cond_scale: float = DALLE_PARAMS.default("cond_scale"),
                 top_k: int = DALLE_PARAMS.default("top_k"), top_p: float = DALLE_PARAMS.default("top_p"),
                 temperature: float = DALLE_PARAMS.default("temperature"), between_batches=None) -> np.ndarray:
        """(num_images, 256, 256, 3) uint8. Image k depends on (seed, batch_size, k, device type), not on num_images.
        Arguments are checked with DALLE_PARAMS (the executor has parsed them with it already). The seed also picks
        the words a lone `<person>` becomes, so such prompts reproduce too. between_batches(done, total) runs before
        each sampling batch and may raise to stop (a request's deadline)."""
        values = DALLE_PARAMS.parse(dict(num_images=num_images, seed=seed, cond_scale=cond_scale, top_k=top_k,
                                         top_p=top_p, temperature=temperature))
        num_images, seed = values.pop("num_images"), values.pop("seed")
        text_ids, text_mask = self.processor([prompt], random.Random(seed))
        uncond_ids, uncond_mask = self.processor.uncond_ids()
        codes = generate_tokens(self.dalle, text_ids, uncond_ids, num_images, seed, batch_size=self.batch_size,
                                codebook_size=self.vqgan.config.n_embed, text_mask=text_mask,
                                uncond_mask=uncond_mask, between_batches=between_batches, **values)
        codes = codes.to(next(self.vqgan.parameters()).device)
        return np.concatenate([postprocess(self.vqgan.decode_code(codes[i:i + VQGAN_DECODE_BATCH]))
                               for i in range(0, len(codes), VQGAN_DECODE_BATCH)])
