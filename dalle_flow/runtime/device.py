"""Device and dtype choice shared by every model."""
from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def pick_device(requested: str | None = None) -> torch.device:
    """'auto' (or None) takes the first CUDA device when there is one, else the CPU."""
    if requested in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {requested!r} was asked for but CUDA is not available")
    return device


def pick_dtype(device: torch.device, requested: str | None = None, half_on_gpu: torch.dtype = torch.float16) -> torch.dtype:
    """'auto' runs half precision on a GPU and float32 on the CPU (CPU half kernels are slow or missing)."""
    if requested in (None, "", "auto"):
        return half_on_gpu if device.type == "cuda" else torch.float32
    if requested not in DTYPES:
        raise ValueError(f"dtype: must be one of auto, {', '.join(DTYPES)}, got {requested!r}")
    return DTYPES[requested]


def seeded_generator(seed: int, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator
