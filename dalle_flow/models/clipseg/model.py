"""CLIPSeg through transformers: the released checkpoint, or a tiny random one built entirely in memory.

DALL·E Flow's original executor ran the authors' `CLIPDensePredT` (ViT-B/16, reduce_dim 64) on 512x512 inputs. This
project uses the same family's Hugging Face port `CIDAS/clipseg-rd64-refined` (ViT-B/16, reduce_dim 64, the refined
decoder), whose processor resizes to 352x352 and normalises with the ImageNet mean/std the original used.
"""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor, CLIPTokenizer, ViTImageProcessor

from dalle_flow.common import weights
from dalle_flow.common.device import pick_device, pick_dtype

DEFAULT_CHECKPOINT = weights.CLIPSEG_REPO  # "CIDAS/clipseg-rd64-refined"
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # what both the original executor and the CIDAS processor normalise with
IMAGENET_STD = (0.229, 0.224, 0.225)
TINY_SEED = 20220606
TINY_IMAGE_SIZE = 64
# The tiny tokenizer knows these words as whole tokens; anything else is spelt out byte by byte, so every prompt
# still tokenizes.
TINY_WORDS = ("a", "an", "the", "of", "and", "in", "on", "with", "photo", "cat", "dog", "person", "man", "woman",
              "car", "tree", "sky", "house", "red", "blue", "green", "face", "hat", "background")


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


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes (printable Latin-1 maps to itself, the rest to
    code points from 256 on), in byte order."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in kept else chr(next(extra)) for b in range(256)]


def tiny_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of the tiny tokenizer: every byte, every byte ending a word, merges that make TINY_WORDS single
    tokens, and CLIP's two special tokens last (as in the real vocabulary)."""
    vocab: dict[str, int] = {}
    for suffix in ("", "</w>"):
        for symbol in _byte_alphabet():
            vocab.setdefault(symbol + suffix, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in TINY_WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        left = pieces[0]
        for right in pieces[1:]:
            if (left, right) not in merges:
                merges.append((left, right))
            left = left + right
            vocab.setdefault(left, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return vocab, merges


def tiny_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer (the real one's normalisation, pre-tokenisation and special tokens) over tiny_vocabulary()."""
    vocab, merges = tiny_vocabulary()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=16)


def tiny_image_processor(size: int = TINY_IMAGE_SIZE) -> ViTImageProcessor:
    """The CIDAS preprocessing (bilinear resize to a square, /255, ImageNet normalisation) at the tiny size."""
    return ViTImageProcessor(do_resize=True, size={"height": size, "width": size}, resample=2, do_rescale=True,
                             rescale_factor=1 / 255, do_normalize=True, image_mean=list(IMAGENET_MEAN),
                             image_std=list(IMAGENET_STD))


def tiny_config(tokenizer: CLIPTokenizer) -> CLIPSegConfig:
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
