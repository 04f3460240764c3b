"""The served DalleBart token loop: one static-shape step per image token, sampling on the device, replayable as a
CUDA graph.

At small batch sizes a decoding step is bound by kernel launches (24 layers × ~30 small kernels) rather than by
arithmetic, so on a GPU the step is captured once as a CUDA graph and replayed for every token. To make that
possible the step reads and writes only tensors that live for the whole run: the previous tokens, the position
(a 0-d device tensor the step increments), the sampling settings (0-d device tensors, except top_k, which fixes a
shape), the uniform numbers of the step's Gumbel noise, the KV cache and the codes. Nothing in it is read on the host,
so the loop never waits for the device until the codes are returned. Self-attention then spans the whole cache with
the later slots masked; uncaptured (the CPU), the same step attends over the filled slots only, which the host knows
without asking the device, because a masked slot costs as much as a used one.

The computation is `sample_rows`' (the reference-faithful loop the parity fixtures check) with the non-code ids
masked: guidance `uncond + scale * (cond - uncond)`, codebook mask, temperature -> top-k -> top-p, argmax of logits
plus Gumbel noise, evaluated on the top-k candidates only (every other id is -inf). The masked ids are never
computed: the head yields the logits of the codebook's ids only, which are the same numbers as the first columns of
the full head (each logit is its own dot product). The noise is drawn outside the step (`uniform_` on the request's generator, one
(batch_size, vocab) block per step as `generate_tokens` documents), so captured and eager runs consume the same random
numbers and give the same tokens.
"""
from __future__ import annotations

from typing import Callable

import torch

from dalle_flow.models.dallebart.decoder import DecoderCache
from dalle_flow.models.dallebart.model import DalleBart
from dalle_flow.models.dallebart.sampling import SamplingSettings, guide, gumbel_from_uniform, nucleus

CAPTURE_WARMUP_STEPS = 2  # eager steps on a side stream before capture (cuBLAS/attention workspaces get allocated)


class TokenLoop:
    """Samples `rows` image rows (prompt-major) from a cache holding 2 * rows decoding rows when guided (conditional
    block first), else rows. `run` may be called again (a later batch of the same size): it resets the tokens and
    the position, and later writes overwrite the cache's slots in order."""

    def __init__(self, model: DalleBart, cache: DecoderCache, rows: int, noise_rows: int, guided: bool,
                 settings: SamplingSettings, codebook_size: int, steps: int | None = None):
        settings = settings.resolved()
        cfg = model.config
        device = model.device
        self.model, self.cache, self.rows, self.guided = model, cache, rows, guided
        self.top_k, self.codebook_size = settings.top_k, codebook_size
        self.steps = cfg.image_length if steps is None else steps
        self.start_id = cfg.decoder_start_token_id

        def scalar(value: float) -> torch.Tensor:
            return torch.tensor(value, dtype=torch.float32, device=device)

        self.cond_scale, self.temperature, self.top_p = (scalar(settings.cond_scale), scalar(settings.temperature),
                                                         scalar(settings.top_p))
        self.ids = torch.full((rows,), self.start_id, dtype=torch.long, device=device)
        self.position = torch.zeros((), dtype=torch.long, device=device)
        self.uniform = torch.zeros((noise_rows, cfg.num_logits), dtype=torch.float32, device=device)
        self.codes = torch.zeros((rows, self.steps), dtype=torch.long, device=device)
        self._replay: Callable[[], None] | None = None

    def step(self, length: int | None = None) -> None:
        """One token for every row, device tensors only, no host reads. length None: static shapes (what is
        captured); length = position + 1: attention over the filled cache slots only (eager decoding)."""
        ids = self.ids
        logits = self.model.step_logits(torch.cat([ids, ids]) if self.guided else ids, self.position,
                                        self.cache, length, vocab=self.codebook_size).float()
        if self.guided:
            logits = guide(logits[:self.rows], logits[self.rows:], self.cond_scale)
        kept, ids = nucleus(logits, self.temperature, self.top_k, self.top_p)
        # argmax(warped + noise) over the vocabulary: every id outside `ids` is -inf, so only the noise at `ids` counts
        noise = gumbel_from_uniform(self.uniform[:self.rows].gather(1, ids))
        next_ids = ids.gather(1, (kept + noise).argmax(dim=-1, keepdim=True))[:, 0]
        self.codes.index_copy_(1, self.position.view(1), next_ids[:, None])
        self.ids.copy_(next_ids)
        self.position.add_(1)

    def _reset(self) -> None:
        self.ids.fill_(self.start_id)
        self.position.zero_()

    def _capture(self) -> Callable[[], None]:
        """The step as a CUDA graph. Warm-up and capture move the state forward; `run` resets it afterwards."""
        side = torch.cuda.Stream(device=self.ids.device)
        side.wait_stream(torch.cuda.current_stream(self.ids.device))
        with torch.cuda.stream(side):
            for _ in range(CAPTURE_WARMUP_STEPS):
                self.step()
        torch.cuda.current_stream(self.ids.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.step()
        return graph.replay

    @torch.inference_mode()  # lighter than no_grad for the ~400 small ops of a step (no version counters)
    def run(self, generator: torch.Generator, capture: bool = False) -> torch.Tensor:
        """(rows, steps) sampled ids. capture=True (CUDA only) replays the static step as a CUDA graph, captured on
        the first run; eager runs attend over the filled slots only. Both pick the same tokens (tested)."""
        if capture and self._replay is None:
            if self.ids.device.type != "cuda":
                raise ValueError(f"capture: CUDA graphs need a CUDA device, the model is on {self.ids.device}")
            self._replay = self._capture()
        self._reset()
        for position in range(self.steps):
            self.uniform.uniform_(0.0, 1.0, generator=generator)
            if capture:
                self._replay()
            else:
                self.step(position + 1)
        return self.codes
