"""CLIPSeg (transformers) from a local Hugging Face folder (`load_clipseg`; executors resolve the folder), or a tiny
random one built entirely in memory (`tiny_clipseg`)."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor, ViTImageProcessor

from dalle_flow.runtime.tiny_tokenizer import tiny_clip_tokenizer
from dalle_flow.models.clipseg.config import IMAGENET_MEAN, IMAGENET_STD, TINY_IMAGE_SIZE, tiny_config

TINY_SEED = 20220606


def load_clipseg(folder: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
    """(model in eval mode, processor) saved in `folder` (never downloads)."""
    model = CLIPSegForImageSegmentation.from_pretrained(folder, dtype=dtype, local_files_only=True)
    processor = CLIPSegProcessor.from_pretrained(folder, local_files_only=True)
    return model.to(device).eval(), processor


def tiny_tokenizer():
    """The tiny CLIP tokenizer, with the tiny CLIPSeg's 16-token context."""
    return tiny_clip_tokenizer(max_length=16)


def tiny_image_processor(size: int = TINY_IMAGE_SIZE) -> ViTImageProcessor:
    """The CIDAS preprocessing (bilinear resize to a square, /255, ImageNet normalisation) at the tiny size."""
    return ViTImageProcessor(do_resize=True, size={"height": size, "width": size}, resample=2, do_rescale=True,
                             rescale_factor=1 / 255, do_normalize=True, image_mean=list(IMAGENET_MEAN),
                             image_std=list(IMAGENET_STD))


def tiny_clipseg(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = TINY_SEED):
    """(model, processor): a deterministic random CLIPSeg and its processor, built without reading or downloading
    anything."""
    tokenizer = tiny_tokenizer()
    processor = CLIPSegProcessor(image_processor=tiny_image_processor(), tokenizer=tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPSegForImageSegmentation(tiny_config(tokenizer))
    return model.to(device=device, dtype=dtype).eval(), processor
