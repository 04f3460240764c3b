"""Text-prompted segmentation and the thresholding choices of DALL·E Flow's /segment.

    image + prompt --CLIPSeg--> probability map (H, W) in [0, 1]          segment()
    --> grey = uint8(p * 255 / max p) --> threshold --> alpha (H, W)      apply_threshold()
    --> RGBA                                                              rgba()

Alpha follows the original executor: by default the prompt's region is TRANSPARENT (alpha 0) and the rest opaque,
ready for inpainting; invert=True makes the prompt's region the opaque part instead. The /segment parameters are
declared once here (`SEGMENT_PARAMS`); the executor parses requests with it and `apply_threshold` checks with it.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dalle_flow.parameters import Param, Params

THRESHOLDING_TYPES = ("none", "binary", "adaptive_mean", "adaptive_gaussian")
SEGMENT_PARAMS = Params((
    Param("thresholding_type", "choice", default="binary", choices=THRESHOLDING_TYPES),
    Param("binary_thresh_strength", "int", default=85, low=0, high=255),  # grey levels of the stretched map
    # odd window side in image pixels; a Gaussian window costs O(block) per pixel
    Param("adaptive_thresh_block_size", "int", default=11, low=3, high=255),
    # subtracted from a local mean of grey levels; beyond ±255 every pixel is equal
    Param("adaptive_thresh_c", "float", default=2.0, low=-255.0, high=255.0),
    Param("invert", "bool", default=False),
))


def _check_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image: must be a uint8 (H, W, 3) RGB array, got {image.dtype} {image.shape}")
    if min(image.shape[:2]) < 1:
        raise ValueError(f"image: must not be empty, got shape {image.shape}")
    return image


@torch.inference_mode()
def segment(model, processor, image: np.ndarray, prompt: str) -> np.ndarray:
    """Probability that each pixel shows `prompt`: float32 (H, W) in [0, 1] at the input's size.

    The model predicts at its own resolution (352x352 for the released checkpoint); the map is resized bilinearly.
    """
    image = _check_image(image)
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt: must be a non-empty string, got {prompt!r}")
    limit = model.config.text_config.max_position_embeddings
    inputs = processor(text=[prompt], images=[Image.fromarray(image)], padding=True, truncation=True,
                       max_length=limit, return_tensors="pt")
    param = next(model.parameters())
    inputs = {k: v.to(param.device) for k, v in inputs.items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(param.dtype)
    logits = model(**inputs).logits  # (1, S, S)
    probs = torch.sigmoid(logits.float()).view(1, 1, *logits.shape[-2:])
    probs = F.interpolate(probs, size=image.shape[:2], mode="bilinear", align_corners=False)
    return probs[0, 0].clamp(0, 1).cpu().numpy()


def apply_threshold(mask: np.ndarray, thresholding_type: str = SEGMENT_PARAMS.default("thresholding_type"),
                    binary_thresh_strength: int = SEGMENT_PARAMS.default("binary_thresh_strength"),
                    adaptive_thresh_block_size: int = SEGMENT_PARAMS.default("adaptive_thresh_block_size"),
                    adaptive_thresh_c: float = SEGMENT_PARAMS.default("adaptive_thresh_c"),
                    invert: bool = SEGMENT_PARAMS.default("invert")) -> np.ndarray:
    """uint8 alpha (H, W) from a probability map, as the original executor derived it.

    The map is first stretched so its maximum is 255 (uint8, truncated). Then:
    - 'none': that grey map as it is (a soft mask);
    - 'binary': 255 where grey > binary_thresh_strength (0..255; lower keeps more), else 0;
    - 'adaptive_mean' / 'adaptive_gaussian': 255 where grey > (mean or Gaussian-weighted mean of its
      block_size x block_size neighbourhood) - C, else 0. An even block size is lowered by one, as the original did.
    The result is inverted (255 - x) unless `invert`, so the prompt's region ends up transparent by default.

    The original thresholded at the model's output resolution and resized the result; here the map is already at
    the image's size, so adaptive block sizes are in image pixels.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.floating):
        raise ValueError(f"mask: must be a float (H, W) array, got {mask.dtype} {mask.shape}")
    if mask.size and not (np.isfinite(mask).all() and mask.min() >= 0 and mask.max() <= 1):
        raise ValueError("mask: values must lie in [0, 1]")
    options = SEGMENT_PARAMS.parse(dict(
        thresholding_type=thresholding_type, binary_thresh_strength=binary_thresh_strength,
        adaptive_thresh_block_size=adaptive_thresh_block_size, adaptive_thresh_c=adaptive_thresh_c, invert=invert))
    thresholding_type = options["thresholding_type"]

    peak = float(mask.max()) if mask.size else 0.0
    # same float32 operation order as the original, so the truncation to uint8 agrees
    scaled = mask.astype(np.float32) * np.float32(255) / np.float32(peak) if peak > 0 else np.zeros(mask.shape)
    grey = np.minimum(scaled, 255).astype(np.uint8)

    if thresholding_type == "none":
        bw = grey
    elif thresholding_type == "binary":
        bw = cv2.threshold(grey, options["binary_thresh_strength"], 255, cv2.THRESH_BINARY)[1]
    else:
        block = options["adaptive_thresh_block_size"]
        block -= 1 - block % 2  # even -> next odd below, like the original
        method = cv2.ADAPTIVE_THRESH_MEAN_C if thresholding_type == "adaptive_mean" else \
            cv2.ADAPTIVE_THRESH_GAUSSIAN_C
        bw = cv2.adaptiveThreshold(grey, 255, method, cv2.THRESH_BINARY, block, options["adaptive_thresh_c"])
    return bw if options["invert"] else 255 - bw


def rgba(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 4): the RGB image with `alpha` as its fourth channel."""
    image = _check_image(image)
    alpha = np.asarray(alpha)
    if alpha.dtype != np.uint8 or alpha.shape != image.shape[:2]:
        raise ValueError(f"alpha: must be uint8 of shape {image.shape[:2]}, got {alpha.dtype} {alpha.shape}")
    return np.dstack([image, alpha])
