"""DALL·E Mega text -> images: processor (normaliser + BPE), DalleBart token sampling, VQGAN decoding."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dalle_flow.runtime.device import pick_device, pick_dtype
from dalle_flow.models.dallebart.loader import load_dallebart
from dalle_flow.models.dallebart.model import tiny_dallebart
from dalle_flow.models.dallebart.processor import DalleProcessor
from dalle_flow.models.dallebart.sampling import generate_tokens
from dalle_flow.models.vqgan import load_vqgan_files, postprocess, tiny_vqgan

DALLE_DEFAULTS = {"cond_scale": 10.0, "top_k": 50, "top_p": 0.9, "temperature": 1.0}
VQGAN_DECODE_BATCH = 8  # VQGAN decoding at 256² is memory-hungry; decode a few images at a time


class DalleMegaPipeline:
    def __init__(self, processor: DalleProcessor, dalle, vqgan, batch_size: int = 16):
        self.processor = processor
        self.dalle = dalle
        self.vqgan = vqgan  # float32 always: its output is quantised to uint8 and half precision shows as banding
        self.batch_size = batch_size

    @classmethod
    def from_files(cls, dalle_config: Path, dalle_checkpoint: Path, tokenizer_folder: Path, words_path: Path,
                   vqgan_config: Path, vqgan_checkpoint: Path, device: str | None = None, dtype: str | None = None,
                   batch_size: int = 16) -> "DalleMegaPipeline":
        device_ = pick_device(device)
        dalle = load_dallebart((dalle_config, dalle_checkpoint), device_, pick_dtype(device_, dtype))
        vqgan = load_vqgan_files(vqgan_config, vqgan_checkpoint, device_, torch.float32)
        return cls(DalleProcessor.from_folder(tokenizer_folder, words_path), dalle, vqgan, batch_size)

    @classmethod
    def tiny(cls, device: str | None = "cpu", batch_size: int = 16) -> "DalleMegaPipeline":
        """Random tiny DalleBart + VQGAN (64 codes, 16×16 tokens -> 256×256): tests and smoke demos only."""
        device_ = pick_device(device)
        vqgan = tiny_vqgan(device=device_)
        dalle = tiny_dallebart(device=device_, image_codebook_size=vqgan.config.n_embed)
        return cls(DalleProcessor.tiny(), dalle, vqgan, batch_size)

    @torch.inference_mode()
    def generate(self, prompt: str, num_images: int, seed: int, cond_scale: float = 10.0, top_k: int = 50,
                 top_p: float = 0.9, temperature: float = 1.0) -> np.ndarray:
        """(num_images, 256, 256, 3) uint8. Image k depends on (seed, batch_size, k, device type), not on num_images."""
        text_ids, text_mask = self.processor([prompt])
        uncond_ids, uncond_mask = self.processor.uncond_ids()
        codes = generate_tokens(self.dalle, text_ids, uncond_ids, num_images, seed, cond_scale=cond_scale,
                                top_k=top_k, top_p=top_p, temperature=temperature, batch_size=self.batch_size,
                                codebook_size=self.vqgan.config.n_embed, text_mask=text_mask,
                                uncond_mask=uncond_mask)
        codes = codes.to(next(self.vqgan.parameters()).device)
        return np.concatenate([postprocess(self.vqgan.decode_code(codes[i:i + VQGAN_DECODE_BATCH]))
                               for i in range(0, len(codes), VQGAN_DECODE_BATCH)])
