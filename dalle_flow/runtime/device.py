"""Device and dtype: resolving an executor's settings (`resolve_device`) and seeding per-request generators."""
from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device | None = "auto", dtype: str | torch.dtype | None = "auto",
                   gpu_default: torch.dtype = torch.float16) -> tuple[torch.device, torch.dtype]:
    """An executor's `device`/`dtype` settings as torch objects; the executors are the one layer that calls this, and
    pipelines and loaders take what it returns.

    device 'auto' (or None) takes the first CUDA device when there is one, else the CPU. dtype 'auto' runs
    `gpu_default` on a GPU (float16, unless a model keeps its reference's float32) and float32 on the CPU (CPU half
    kernels are slow or missing)."""
    if device in (None, "", "auto"):
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        requested, device = device, torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device: {str(requested)!r} was asked for but CUDA is not available")
    if isinstance(dtype, torch.dtype):
        return device, dtype
    if dtype in (None, "", "auto"):
        return device, gpu_default if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype: must be one of auto, {', '.join(DTYPES)}, got {dtype!r}")
    return device, DTYPES[dtype]


def seeded_generator(seed: int, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator
