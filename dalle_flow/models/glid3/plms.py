"""PLMS sampler (pseudo linear multistep, Liu et al. 2022) as GLID-3 XL runs it, with a PRK warm-up.

The sampler never sees the network: it calls `model_fn(x, timesteps)` with original-process timesteps (float32,
fractional during the warm-up) and uses the first C channels of the result as eps, C = x's channel count.

Per spaced index t, counting down from the start index to 0:
- the first 3 steps are pseudo Runge-Kutta (4 model calls each, half steps at t - 0.5);
- later steps are 4th-order linear multistep on the eps history (1 model call each).
`pred_xstart` of the last step (t = 0) is the result. The `sample` of that step is transferred to t = -1, which wraps
to the noisiest alpha (the reference's indexing), so it is not an image; it is kept only for parity.

A PRK step at t = 0 would evaluate alpha_bar(-0.5) = lerp(ab[-1], ab[0], -0.5) < 0 and produce NaN, so at least
`MIN_SAMPLING_STEPS` steps must run: the warm-up then ends at t = 1 at the latest.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from dalle_flow.models.glid3.schedule import SpacedSchedule

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
PRK_STEPS = 3
MIN_SAMPLING_STEPS = PRK_STEPS + 1


@dataclass
class PlmsStep:
    index: int  # spaced index t of this step
    sample: torch.Tensor  # x at t - 1
    pred_xstart: torch.Tensor  # predicted clean latent


class PlmsSampler:
    def __init__(self, schedule: SpacedSchedule):
        self.schedule = schedule

    def _ab(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.schedule.alpha_bar(t).view(-1, *([1] * (x.ndim - 1)))

    def eps_to_xstart(self, x, eps, t):
        ab = self._ab(t, x)
        return (x - eps * torch.sqrt(1 - ab)) / torch.sqrt(ab)

    def transfer(self, x, eps, t_from, t_to):
        """Move x from t_from to t_to along the deterministic path given by eps."""
        ab_to = self._ab(t_to, x)
        return self.eps_to_xstart(x, eps, t_from) * torch.sqrt(ab_to) + torch.sqrt(1 - ab_to) * eps

    def eps(self, model_fn: ModelFn, x, t):
        return model_fn(x, self.schedule.model_timesteps(t))[:, : x.shape[1]].float()

    def prk_step(self, model_fn: ModelFn, x, t):
        t_mid, t_prev = t - 0.5, t - 1
        e1 = self.eps(model_fn, x, t)
        e2 = self.eps(model_fn, self.transfer(x, e1, t, t_mid), t_mid)
        e3 = self.eps(model_fn, self.transfer(x, e2, t, t_mid), t_mid)
        e4 = self.eps(model_fn, self.transfer(x, e3, t, t_prev), t_prev)
        e = (e1 + 2 * e2 + 2 * e3 + e4) / 6
        # history keeps the combined eps; pred_xstart uses it too
        return self.transfer(x, e, t, t_prev), self.eps_to_xstart(x, e, t), e

    def plms_step(self, model_fn: ModelFn, x, t, history):
        e = self.eps(model_fn, x, t)
        e_prime = (55 * e - 59 * history[-1] + 37 * history[-2] - 9 * history[-3]) / 24
        # the reference predicts x0 from the raw eps here, not from the multistep combination
        return self.transfer(x, e_prime, t, t - 1), self.eps_to_xstart(x, e, t), e

    def steps(self, model_fn: ModelFn, x: torch.Tensor, start_index: int | None = None) -> Iterator[PlmsStep]:
        """Run from spaced index `start_index` (default: the noisiest, N - 1) down to 0, yielding every step."""
        start = self.schedule.num_steps - 1 if start_index is None else int(start_index)
        if not 0 <= start < self.schedule.num_steps:
            raise ValueError(f"start_index must be in 0..{self.schedule.num_steps - 1}, got {start}")
        if start + 1 < MIN_SAMPLING_STEPS:
            raise ValueError(f"PLMS needs at least {MIN_SAMPLING_STEPS} steps (its {PRK_STEPS}-step warm-up must end "
                             f"before t = 0), got {start + 1}")
        x = x.float()
        history: list[torch.Tensor] = []
        for i in range(start, -1, -1):
            t = torch.full((x.shape[0],), float(i), device=x.device)
            if len(history) < PRK_STEPS:
                x_next, x0, e = self.prk_step(model_fn, x, t)
            else:
                x_next, x0, e = self.plms_step(model_fn, x, t, history)
                history.pop(0)
            history.append(e)
            yield PlmsStep(i, x_next, x0)
            x = x_next

    def sample(self, model_fn: ModelFn, x: torch.Tensor, start_index: int | None = None) -> torch.Tensor:
        """The predicted clean latent after the last step."""
        last = None
        for last in self.steps(model_fn, x, start_index):
            pass
        return last.pred_xstart


def initial_latents(schedule: SpacedSchedule, noise: torch.Tensor, init_latent: torch.Tensor | None = None,
                    skip_steps: int = 0) -> tuple[torch.Tensor, int]:
    """Starting point and start index: pure noise, or `init_latent` diffused to step N - 1 - skip_steps.

    As in the reference, skipping steps without an init image diffuses zeros, and an init image with no skipped
    steps is still mixed in (at the noisiest step, with weight sqrt(ab[N-1])).
    """
    skip_steps = int(skip_steps)
    if not 0 <= skip_steps < schedule.num_steps:
        raise ValueError(f"skip_steps must be in 0..{schedule.num_steps - 1}, got {skip_steps}")
    start = schedule.num_steps - 1 - skip_steps
    if skip_steps and init_latent is None:
        init_latent = torch.zeros_like(noise)
    if init_latent is None:
        return noise.float(), start
    return schedule.q_sample(init_latent.float().expand_as(noise), start, noise.float()), start
