"""CLIPSeg through transformers: the released checkpoint, or a tiny random one built entirely in memory.

DALL·E Flow's original executor ran the authors' `CLIPDensePredT` (ViT-B/16, reduce_dim 64) on 512x512 inputs. This
project uses the same family's Hugging Face port `CIDAS/clipseg-rd64-refined` (ViT-B/16, reduce_dim 64, the refined
decoder), whose processor resizes to 352x352 and normalises with the ImageNet mean/std the original used.
"""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor, ViTImageProcessor

from dalle_flow.serving import weights
from dalle_flow.runtime.device import pick_device, pick_dtype
from dalle_flow.runtime.tiny_tokenizer import tiny_clip_tokenizer

DEFAULT_CHECKPOINT = weights.CLIPSEG_REPO  # "CIDAS/clipseg-rd64-refined"
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # what both the original executor and the CIDAS processor normalise with
IMAGENET_STD = (0.229, 0.224, 0.225)
TINY_SEED = 20220606
TINY_IMAGE_SIZE = 64



def load_clipseg(name_or_path: str | Path = DEFAULT_CHECKPOINT, device: str | torch.device | None = None,
                 dtype: str | torch.dtype | None = None, weights_dir=None):
    """(model in eval mode, processor) from a local folder, the project's weights registry (the default checkpoint:
    DALLE_FLOW_WEIGHTS_DIR/clipseg/, the HF cache, or a download), or any other Hugging Face repo id."""
    device = pick_device(device if isinstance(device, str) or device is None else str(device))
    if not isinstance(dtype, torch.dtype):
        dtype = pick_dtype(device, dtype)
    if Path(name_or_path).is_dir():
        folder = Path(name_or_path)
    elif str(name_or_path) == DEFAULT_CHECKPOINT:
        folder = _registry_folder(weights_dir)
    else:
        folder = str(name_or_path)
    model = CLIPSegForImageSegmentation.from_pretrained(folder, dtype=dtype)
    processor = CLIPSegProcessor.from_pretrained(folder)
    return model.to(device).eval(), processor


def _registry_folder(weights_dir=None) -> Path:
    files = weights.resolve_group("clipseg", weights_dir)
    folders = {path.parent for path in files.values()}
    if len(folders) != 1:
        found = "\n".join(f"  - {path}" for path in files.values())
        raise weights.MissingWeightsError(f"the clipseg files must sit in one folder, found them in several:\n{found}")
    return folders.pop()


def tiny_tokenizer():
    """The tiny CLIP tokenizer, with the tiny CLIPSeg's 16-token context."""
    return tiny_clip_tokenizer(max_length=16)


def tiny_image_processor(size: int = TINY_IMAGE_SIZE) -> ViTImageProcessor:
    """The CIDAS preprocessing (bilinear resize to a square, /255, ImageNet normalisation) at the tiny size."""
    return ViTImageProcessor(do_resize=True, size={"height": size, "width": size}, resample=2, do_rescale=True,
                             rescale_factor=1 / 255, do_normalize=True, image_mean=list(IMAGENET_MEAN),
                             image_std=list(IMAGENET_STD))


def tiny_config(tokenizer) -> CLIPSegConfig:
    """The rd64-refined structure (refined transposed-conv decoder, FiLM at layer 0, three extracted layers),
    scaled down. patch_size stays 16: the refined decoder upsamples by (patch_size // 4) ** 2."""
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=tokenizer.model_max_length,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                  image_size=TINY_IMAGE_SIZE, patch_size=16)
    return CLIPSegConfig(text_config=text, vision_config=vision, projection_dim=16, extract_layers=[1, 2, 3],
                         reduce_dim=16, decoder_num_attention_heads=2, decoder_intermediate_size=32,
                         conditional_layer=0, use_complex_transposed_convolution=True)


def tiny_clipseg(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = TINY_SEED):
    """(model, processor): a deterministic random CLIPSeg and its processor, built without reading or downloading
    anything."""
    tokenizer = tiny_tokenizer()
    processor = CLIPSegProcessor(image_processor=tiny_image_processor(), tokenizer=tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPSegForImageSegmentation(tiny_config(tokenizer))
    return model.to(device=device, dtype=dtype).eval(), processor
