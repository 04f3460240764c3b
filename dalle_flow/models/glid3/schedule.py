"""Noise schedule of GLID-3 XL and its respacing to fewer sampling steps.

The sampler works on *spaced* indices t in 0..N-1 (N = steps). They may be fractional (PRK half steps) or -1 / -0.5
at the very end; two lookups turn them into numbers:

- `model_timesteps(t)`: the original-process timestep handed to the UNet, linearly interpolated in `timestep_map`;
- `alpha_bar(t)`: the spaced cumulative alpha, linearly interpolated the same way.

Both index like Python (negative indices wrap to the end), because the reference does and its last PLMS step asks
for t = -1. The arithmetic order (float64 tables, cast to float32, then torch.lerp) follows the reference so that the
results agree to float32 rounding.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def ldm_linear_betas(num_timesteps: int = 1000, start: float = 0.00085, end: float = 0.012) -> np.ndarray:
    """GLID-3 XL's "linear" schedule is LDM's: linear in sqrt(beta), not guided-diffusion's linear in beta."""
    return np.linspace(start ** 0.5, end ** 0.5, num_timesteps, dtype=np.float64) ** 2


def space_timesteps(num_timesteps: int, section_counts) -> list[int]:
    """Timesteps kept from the original process: "N" (or N) evenly spread, "a,b,c" per equal section.

    Positions are accumulated in floating point and rounded half-to-even, so e.g. 100 of 1000 keeps 0, 10, ..., 50,
    61, ... (not multiples of 10.09 rounded independently).
    """
    if isinstance(section_counts, int):
        counts = [section_counts]
    elif isinstance(section_counts, str):
        try:
            counts = [int(c) for c in section_counts.split(",")]
        except ValueError:
            raise ValueError(f"timestep respacing must be 'N' or 'N,M,...', got {section_counts!r}") from None
    else:
        counts = [int(c) for c in section_counts]
    size_per, extra = divmod(num_timesteps, len(counts))
    start, kept = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if count < 1 or size < count:
            raise ValueError(f"cannot divide a section of {size} timesteps into {count} steps")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            kept.append(start + round(cur))
            cur += stride
        start += size
    return sorted(set(kept))


@dataclass(frozen=True)
class SpacedSchedule:
    timestep_map: np.ndarray  # (N,) int64: original timestep of each spaced index
    alphas_cumprod: np.ndarray  # (N,) float64: cumulative alpha at each spaced index

    @classmethod
    def create(cls, respacing, num_timesteps: int = 1000, noise_schedule: str = "linear") -> "SpacedSchedule":
        if noise_schedule != "linear":
            raise ValueError(f"noise_schedule {noise_schedule!r}: only 'linear' (LDM's) is used by GLID-3 XL")
        base = np.cumprod(1.0 - ldm_linear_betas(num_timesteps))
        kept = space_timesteps(num_timesteps, respacing)
        # The reference re-derives the spaced process from per-step betas and multiplies them up again; this is
        # acp[kept] up to float64 rounding, done the same way to stay bit-compatible.
        betas, last = [], 1.0
        for i in kept:
            betas.append(1.0 - base[i] / last)
            last = base[i]
        acp = np.cumprod(1.0 - np.array(betas, dtype=np.float64))
        return cls(np.array(kept, dtype=np.int64), acp)

    @property
    def num_steps(self) -> int:
        return len(self.timestep_map)

    def _lerp_lookup(self, table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.float()
        lo = table[t.floor().long()]
        hi = table[t.ceil().long()]
        return torch.lerp(lo, hi, t.frac())  # frac keeps the sign: lerp(a[-1], a[0], -0.5) at t = -0.5

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """(N,) spaced indices -> (N,) float32 original timesteps for the UNet."""
        table = torch.tensor(self.timestep_map, dtype=torch.float32, device=t.device)
        return self._lerp_lookup(table, t)

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """(N,) spaced indices -> (N,) float32 cumulative alpha."""
        table = torch.from_numpy(self.alphas_cumprod).to(t.device).float()
        return self._lerp_lookup(table, t)

    def q_sample(self, x_start: torch.Tensor, index: int, noise: torch.Tensor) -> torch.Tensor:
        """Diffuse x_start to spaced step `index`: sqrt(ab) x0 + sqrt(1 - ab) noise (roots taken in float64)."""
        ab = float(self.alphas_cumprod[index])
        a = torch.tensor(np.sqrt(ab), dtype=torch.float64).float().item()
        b = torch.tensor(np.sqrt(1.0 - ab), dtype=torch.float64).float().item()
        return a * x_start + b * noise
