"""Test-time procedure of the reference's `main_test_swinir.py --task real_sr` around the network.

    uint8 RGB -> float /255 -> symmetric pad bottom/right to the NEXT multiple of 8 (always 1..8 px)
    -> network (whole image, or tiles) -> crop to scale*(H, W) -> clamp [0, 1] -> x255 -> round half to even -> uint8

The padding is not the network's own reflect padding: it repeats the edge pixel ("flip-concat") and always adds
rows and columns, so a 256x256 image runs as 264x264. Skipping it changes the output by up to ~2 grey levels.

The /upscale parameters and their rules are declared here once (`upscale_params`, `check_tiling`); the executor
validates a request with them before any image runs, and `upscale` checks direct callers the same way.
"""
from __future__ import annotations

import numpy as np
import torch

from dalle_flow.parameters import Param, Params
from dalle_flow.models.swinir.network import SwinIR

PAD_MULTIPLE = 8  # main_test_swinir.setup(): window_size = 8 for real_sr, a constant of the script, not the model
# dtype 'auto' on a GPU: float32, as the reference ran SwinIR. Half precision is opt-in (dtype: float16) until
# benchmarks/gpu_suite.py shows its uint8 output within HALF_TOLERANCE of float32 (README, Deliberate differences).
GPU_DEFAULT_DTYPE = torch.float32
DEFAULT_TILE_OVERLAP = 32  # the reference script's default


def upscale_params(window: int, max_side: int | None = None) -> Params:
    """The /upscale parameters for a model with this window. tile None runs the whole image at once (as DALL·E Flow
    did); a tile size bounds memory by the tile instead of the image, with slightly different pixels at the seams.
    tile_overlap's upper bound is the tile in use (a rule here, and per image in `check_tiling`)."""

    def tile_fits_window(values: dict) -> None:
        if values["tile"] is not None and values["tile"] % window:
            raise ValueError(f"tile: must be a multiple of the window size {window} (or null for no tiling), "
                             f"got {values['tile']}")

    def overlap_below_tile(values: dict) -> None:
        if values["tile"] is not None and values["tile_overlap"] >= values["tile"]:
            raise ValueError(f"tile_overlap: must be smaller than tile = {values['tile']}, got "
                             f"{values['tile_overlap']}")

    return Params((Param("tile", "int", default=None, low=window, high=max_side, optional=True),
                   Param("tile_overlap", "int", default=DEFAULT_TILE_OVERLAP, low=0)),
                  (tile_fits_window, overlap_below_tile))


def padded_side(side: int, multiple: int = PAD_MULTIPLE) -> int:
    """The side an image runs at: always padded to the next multiple (see `symmetric_pad`)."""
    return (side // multiple + 1) * multiple


def check_tiling(tile: int | None, tile_overlap: int, height: int, width: int, what: str = "the image") -> None:
    """A tile larger than the padded image shrinks to it; the overlap must still be smaller than that tile."""
    if tile is None:
        return
    used = min(tile, padded_side(height), padded_side(width))
    if tile_overlap >= used:
        raise ValueError(f"tile_overlap: must be smaller than the tile actually used for {what} ({used}, the padded "
                         f"image being smaller than tile = {tile}), got {tile_overlap}")


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, C) or (N, H, W, C) -> float32 (N, C, H, W) in [0, 1]."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"image: must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4:
        raise ValueError(f"image: must be (H, W, C) or (N, H, W, C), got shape {images.shape}")
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return x.float() / 255.0


def symmetric_pad(x: torch.Tensor, multiple: int = PAD_MULTIPLE) -> torch.Tensor:
    """Pad (N, C, H, W) bottom then right by mirroring with the edge repeated, to (H // m + 1) * m rows (and likewise
    columns). An image smaller than the padding gets only its mirror (2H rows); the network's own reflect padding
    then completes it, which is what the reference does too."""
    h, w = x.shape[-2:]
    x = torch.cat([x, x.flip(-2)], dim=-2)[..., :padded_side(h, multiple), :]
    return torch.cat([x, x.flip(-1)], dim=-1)[..., :padded_side(w, multiple)]


def tile_starts(size: int, tile: int, stride: int) -> list[int]:
    """Tile offsets along one side as the reference computes them: every stride, then one flush with the end."""
    return list(range(0, size - tile, stride)) + [size - tile]


def run_tiled(model: SwinIR, x: torch.Tensor, tile: int, tile_overlap: int) -> torch.Tensor:
    """The reference's tiled test: overlapping square tiles run separately, outputs averaged where they overlap.

    Tiles see less context than the whole image and seams are averaged, so results differ from untiled inference;
    it bounds peak memory by the tile size instead of the image size. x is already padded; `upscale` has checked
    tile and tile_overlap.
    """
    n, c, h, w = x.shape
    scale = model.upscale
    tile = min(tile, h, w)
    stride = tile - tile_overlap
    total = torch.zeros(n, c, h * scale, w * scale, dtype=x.dtype, device=x.device)
    count = torch.zeros(1, 1, h * scale, w * scale, dtype=x.dtype, device=x.device)
    for top in tile_starts(h, tile, stride):
        for left in tile_starts(w, tile, stride):
            out = model(x[..., top:top + tile, left:left + tile])
            rows = slice(top * scale, (top + tile) * scale)
            cols = slice(left * scale, (left + tile) * scale)
            total[..., rows, cols] += out
            count[..., rows, cols] += 1
    return total / count


@torch.inference_mode()
def upscale_tensor(model: SwinIR, x: torch.Tensor, tile: int | None = None,
                   tile_overlap: int = DEFAULT_TILE_OVERLAP) -> dict:
    """x: (N, C, H, W) float in [0, 1]. Returns every stage: 'padded_input', 'model_output_padded' (N, C, sHp, sWp)
    and 'output_float' (N, C, sH, sW), not clamped, in the model's dtype and device."""
    param = next(model.parameters())
    x = x.to(device=param.device, dtype=param.dtype)
    h, w = x.shape[-2:]
    padded = symmetric_pad(x)
    out = model(padded) if tile is None else run_tiled(model, padded, tile, tile_overlap)
    return {"padded_input": padded, "model_output_padded": out,
            "output_float": out[..., :h * model.upscale, :w * model.upscale]}


def to_uint8(y: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) float -> uint8 (N, H, W, C): clamp to [0, 1], x255 and round half to even in float32 numpy."""
    y = y.detach().float().cpu().clamp(0, 1).numpy()
    return (y * np.float32(255.0)).round().astype(np.uint8).transpose(0, 2, 3, 1)


def upscale(model: SwinIR, image: np.ndarray, tile: int | None = None,
            tile_overlap: int = DEFAULT_TILE_OVERLAP) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> uint8 RGB (sH, sW, 3); a batch (N, H, W, 3) of same-size images -> (N, sH, sW, 3).

    tile None (default) runs the whole image at once, exactly as DALL·E Flow ran the reference. A tile size (a
    multiple of 8) runs overlapping tiles instead: lower peak memory for large inputs, slightly different pixels.
    """
    image = np.asarray(image)
    x = images_to_tensor(image)
    if x.shape[1] != model.config.in_chans:
        raise ValueError(f"image: must have {model.config.in_chans} channels, got shape {image.shape}")
    options = upscale_params(model.window_size).parse({"tile": tile, "tile_overlap": tile_overlap})
    check_tiling(options["tile"], options["tile_overlap"], *x.shape[-2:])
    out = to_uint8(upscale_tensor(model, x, options["tile"], options["tile_overlap"])["output_float"])
    return out[0] if image.ndim == 3 else out
