"""CLIP from a local Hugging Face folder (`load_clip`; executors resolve the folder), or the tiny random one."""
from __future__ import annotations

import torch

from dalle_flow.models.clip.config import OPENAI_MEAN, OPENAI_STD, tiny_config
from dalle_flow.models.clip.model import ClipEmbedder

TINY_SEED = 1234


def load_clip(folder: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> ClipEmbedder:
    """The CLIP model, tokenizer and image processor saved in `folder` (never downloads)."""
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

    model = CLIPModel.from_pretrained(folder, local_files_only=True)
    tokenizer = CLIPTokenizerFast.from_pretrained(folder, local_files_only=True)
    processor = CLIPImageProcessor.from_pretrained(folder, local_files_only=True)
    return ClipEmbedder(model, tokenizer, processor, torch.device(device), dtype, str(folder))


def tiny_clip(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
              seed: int = TINY_SEED) -> ClipEmbedder:
    """Random, deterministic, 32-dim embeddings of 32×32 crops: for tests and smoke demos only."""
    from transformers import CLIPImageProcessor, CLIPModel

    from dalle_flow.runtime.tiny_tokenizer import tiny_clip_tokenizer

    tokenizer = tiny_clip_tokenizer(77)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(tiny_config(tokenizer))
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                   image_mean=list(OPENAI_MEAN), image_std=list(OPENAI_STD))
    return ClipEmbedder(model, tokenizer, processor, torch.device(device), dtype, "tiny-clip")
