"""Super-conditioned sampling of image tokens from DalleBart, as dalle-mini's `DalleBart.generate(do_sample=True)`.

At each step, for every image row:
  logits = logits_uncond + cond_scale * (logits_cond - logits_uncond)     (over all image_vocab_size + 1 ids)
  logits = logits / temperature -> keep top_k largest -> keep the top_p nucleus (HF Flax warpers, in this order)
  token  = argmax(logits + gumbel_noise)                                   (= jax.random.categorical)
The conditional rows (text) and unconditional rows (the tokenised empty string, passed in by the caller) run through
the decoder as one batch; see decoder.py for how rows are grouped by prompt.

Deliberate difference from dalle-mini: `generate_tokens` sets every id >= the VQGAN codebook size (the decoder start
id, bos/eos/pad and the unused padding ids) to -inf BEFORE temperature/top-k/top-p. dalle-mini never masks them and
relies on the trained model not picking them; an undertrained or tiny model does (the parity fixture samples such
ids), and a VQGAN indexed with them would fail. With the mask, EOS can never be sampled, so every row runs the full
image_length steps. The parity path (`supercondition_sample(..., codebook_size=None)`) keeps the reference behaviour,
EOS rule included (a row that samples eos_token_id emits pad_token_id from then on).

Randomness: dalle-mini draws its Gumbel noise with JAX's PRNG, which cannot be reproduced in torch, so the same seed
gives other images than dalle-mini. `generate_tokens` uses one torch.Generator on the model's device seeded once per
request; images are sampled in consecutive batches of `batch_size`, and at every step of a batch one block of
(batch_size, vocab) uniform numbers is drawn (all batch_size rows even when the last batch is smaller) and turned into
Gumbel noise, row i of the block going to image i of the batch. Image k of a request therefore depends only on seed,
batch_size, its index k and the device type (CPU and CUDA generators differ), not on num_images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from dalle_flow.runtime.device import seeded_generator
from dalle_flow.models.dallebart.decoder import DecoderCache
from dalle_flow.models.dallebart.model import DalleBart

REFERENCE_TOP_K = 50  # dalle-mini's generate(top_k=None) falls back to PretrainedConfig.top_k = 50

NoiseFn = Callable[[int, int, int], torch.Tensor]  # (step, rows, vocab) -> (rows, vocab) float32 Gumbel noise


@dataclass(frozen=True)
class SamplingSettings:
    """The warpers' settings with dalle-mini's meaning of None. Request values are validated (and defaulted) by the
    DALL·E Mega pipeline's parameter declaration before they get here."""
    cond_scale: float
    top_k: int | None  # None -> 50 (the reference's fallback); 0 -> no top-k
    top_p: float | None  # None or 1.0 -> no nucleus filtering
    temperature: float | None  # None -> 1.0

    def resolved(self) -> "SamplingSettings":
        return SamplingSettings(float(self.cond_scale), REFERENCE_TOP_K if self.top_k is None else int(self.top_k),
                                1.0 if self.top_p is None else float(self.top_p),
                                1.0 if self.temperature is None else float(self.temperature))


def guide(logits_cond: torch.Tensor, logits_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    return logits_uncond + scale * (logits_cond - logits_uncond)


def gumbel_from_uniform(u: torch.Tensor) -> torch.Tensor:
    """Gumbel(0, 1) noise from float32 uniform numbers in [0, 1); argmax(logits + noise) is an exact categorical
    sample."""
    return -torch.log(-torch.log(u.clamp_min(torch.finfo(torch.float32).tiny)))


def gumbel_noise(shape, generator: torch.Generator, device) -> torch.Tensor:
    return gumbel_from_uniform(torch.rand(shape, generator=generator, device=device, dtype=torch.float32))


def nucleus(logits: torch.Tensor, temperature, top_k: int, top_p) -> tuple[torch.Tensor, torch.Tensor]:
    """temperature -> top-k -> top-p, kept sparse: (k logits sorted descending with the ones top-p removes at -inf,
    their vocabulary ids). top_k 0 keeps the whole vocabulary (sorted).

    The nucleus is computed on the k values `topk` already returns sorted (the ids top-k removed have zero probability
    either way), avoiding a sort over the whole vocabulary. `temperature` and `top_p` may be numbers or 0-d tensors
    on the logits' device: nothing here branches on their values, so a captured decoding step reads them from device
    memory (top_p >= 1 keeps every token)."""
    logits = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        ordered, indices = logits.topk(top_k, dim=-1)
    else:
        ordered, indices = logits.sort(dim=-1, descending=True)
    cumulative = F.softmax(ordered, dim=-1).cumsum(dim=-1)
    keep = torch.ones_like(ordered, dtype=torch.bool)
    keep[..., 1:] = (cumulative[..., :-1] < top_p) | (top_p >= 1.0)
    return ordered.masked_fill(~keep, -math.inf), indices


def warp(logits: torch.Tensor, settings: SamplingSettings,
         want_top_k: bool = False) -> tuple[torch.Tensor | None, torch.Tensor]:
    """temperature -> top-k -> top-p over the whole vocabulary -> (logits after top-k if asked for, else None; logits
    after top-p, -inf where removed); the tests compare it with the plain filters in turn."""
    kept, indices = nucleus(logits, settings.temperature, settings.top_k, settings.top_p)
    after_top_k = None
    if want_top_k:
        scaled = (logits / settings.temperature).gather(-1, indices)
        after_top_k = torch.full_like(logits, -math.inf).scatter_(-1, indices, scaled)
    return after_top_k, torch.full_like(logits, -math.inf).scatter_(-1, indices, kept)


def _encode_prompts(model: DalleBart, text_ids, text_mask, uncond_ids, uncond_mask, guided: bool):
    """Encode texts (P, T) and, when guided, the unconditional texts (P, T) as one batch -> (G, T, d), (G, T)."""
    if guided:
        length = max(text_ids.shape[1], uncond_ids.shape[1])
        pad = model.config.text_pad_token_id
        text_ids, uncond_ids = (F.pad(t, (0, length - t.shape[1]), value=pad) for t in (text_ids, uncond_ids))
        text_mask, uncond_mask = (F.pad(m, (0, length - m.shape[1]), value=0) for m in (text_mask, uncond_mask))
        text_ids, text_mask = torch.cat([text_ids, uncond_ids]), torch.cat([text_mask, uncond_mask])
    return model.encode(text_ids, text_mask), text_mask


@torch.no_grad()
def sample_rows(model: DalleBart, cache: DecoderCache, rows: int, guided: bool, settings: SamplingSettings,
                 noise: NoiseFn, codebook_size: int | None, steps: int, record: dict | None) -> torch.Tensor:
    """Sample `rows` image rows (P prompts x n images, prompt-major). The cache holds 2*rows decoding rows when
    guided (conditional block first), else rows. Returns (rows, steps + 1) with the start id in column 0."""
    settings = settings.resolved()
    cfg = model.config
    device = model.device
    sequences = torch.full((rows, steps + 1), cfg.pad_token_id, dtype=torch.long, device=device)
    sequences[:, 0] = cfg.decoder_start_token_id
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    for step in range(steps):
        token = sequences[:, step]
        position = torch.tensor(step, device=device)
        logits = model.step_logits(torch.cat([token, token]) if guided else token, position, cache,
                                   step + 1).float()
        if guided:
            logits_cond, logits_uncond = logits[:rows], logits[rows:]
            logits = guide(logits_cond, logits_uncond, settings.cond_scale)
        if codebook_size is not None:
            logits[:, codebook_size:] = -math.inf
        after_top_k, warped = warp(logits, settings, want_top_k=record is not None)
        next_token = (warped + noise(step, rows, warped.shape[-1])).argmax(dim=-1)
        if codebook_size is None:  # the reference's EOS rule (cannot trigger when non-codes are masked)
            finished |= next_token == cfg.eos_token_id
            next_token = next_token.masked_fill(finished, cfg.pad_token_id)
        sequences[:, step + 1] = next_token
        if record is not None:
            for name, value in (("logits_cond", logits_cond if guided else logits),
                                ("logits_uncond", logits_uncond if guided else None), ("logits_guided", logits),
                                ("logits_topk", after_top_k), ("logits_warped", warped)):
                if value is not None:
                    record.setdefault(name, []).append(value.detach().cpu())
    return sequences


@torch.no_grad()
def supercondition_sample(model: DalleBart, text_ids: torch.Tensor, text_mask: torch.Tensor,
                          uncond_ids: torch.Tensor | None, uncond_mask: torch.Tensor | None,
                          settings: SamplingSettings, noise: NoiseFn, images_per_prompt: int = 1,
                          steps: int | None = None, codebook_size: int | None = None,
                          record: dict | None = None) -> torch.Tensor:
    """Sample images for P prompts at once: text (P, T) and unconditional (P, T) ids/masks -> sequences
    (P * images_per_prompt, steps + 1), prompt-major, column 0 = decoder start id. `noise(step, rows, vocab)` supplies
    the Gumbel noise (stored noise for parity, a seeded generator for serving). codebook_size=None reproduces
    dalle-mini exactly (no masking of non-code ids); `record` collects per-step logits when given."""
    settings = settings.resolved()
    steps = model.config.image_length if steps is None else steps
    guided = settings.cond_scale != 1.0  # as dalle-mini: scale 1 skips the unconditional pass entirely
    if guided and uncond_ids is None:
        raise ValueError("uncond_ids: required when cond_scale != 1 (the tokenised empty prompt)")
    hidden, mask = _encode_prompts(model, text_ids, text_mask, uncond_ids, uncond_mask, guided)
    rows = text_ids.shape[0] * images_per_prompt
    cache = model.init_cache(hidden, mask, rows * (2 if guided else 1))
    return sample_rows(model, cache, rows, guided, settings, noise, codebook_size, steps, record)


def _check_ids(name: str, ids: torch.Tensor, model: DalleBart):
    if ids.ndim != 2 or ids.shape[0] != 1:
        raise ValueError(f"{name}: must have shape (1, T), got {tuple(ids.shape)}")
    if not 1 <= ids.shape[1] <= model.config.max_text_length:
        raise ValueError(f"{name}: length must be 1..{model.config.max_text_length}, got {ids.shape[1]}")
    if ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"{name}: must be an integer tensor, got {ids.dtype}")
    if int(ids.min()) < 0 or int(ids.max()) >= model.config.encoder_vocab_size:
        raise ValueError(f"{name}: ids must lie in 0..{model.config.encoder_vocab_size - 1}")


@torch.no_grad()
def generate_tokens(model: DalleBart, text_ids: torch.Tensor, uncond_ids: torch.Tensor, num_images: int, seed: int,
                    *, cond_scale: float, top_k: int | None, top_p: float | None, temperature: float | None,
                    batch_size: int, codebook_size: int | None = None, text_mask: torch.Tensor | None = None,
                    uncond_mask: torch.Tensor | None = None, capture: bool | None = None,
                    between_batches: Callable[[int, int], None] | None = None) -> torch.LongTensor:
    """Sample `num_images` images for one prompt -> (num_images, image_length) VQGAN codes on the model's device.

    Decoding runs `decode_loop.TokenLoop`; capture (None: on CUDA) replays its step as a CUDA graph, same tokens.

    text_ids / uncond_ids: (1, T) from the processor (uncond = tokenised "", NOT normalised). Masks default to
    ids != text pad id (1). codebook_size (default: the model's, 16384 for mega) bounds the returned codes; pass a
    smaller VQGAN's size to restrict sampling to its codebook. See the module docstring for the seed derivation.
    between_batches(done, total), when given, runs before each batch; it raises to stop (a request's deadline).
    """
    settings = SamplingSettings(cond_scale, top_k, top_p, temperature).resolved()
    limit = model.config.image_codebook_size
    codebook_size = limit if codebook_size is None else codebook_size
    if isinstance(codebook_size, bool) or not isinstance(codebook_size, int) or not 1 <= codebook_size <= limit:
        raise ValueError(f"codebook_size: must be an integer in 1..{limit}, got {codebook_size!r}")
    guided = settings.cond_scale != 1.0
    device = model.device
    pad = model.config.text_pad_token_id
    _check_ids("text_ids", text_ids, model)
    text_ids = text_ids.to(device=device, dtype=torch.long)
    text_mask = (text_ids != pad).long() if text_mask is None else text_mask.to(device).long()
    if guided:
        if uncond_ids is None:
            raise ValueError("uncond_ids: required when cond_scale != 1 (the tokenised empty prompt)")
        _check_ids("uncond_ids", uncond_ids, model)
        uncond_ids = uncond_ids.to(device=device, dtype=torch.long)
        uncond_mask = (uncond_ids != pad).long() if uncond_mask is None else uncond_mask.to(device).long()

    from dalle_flow.models.dallebart.decode_loop import TokenLoop  # built on this module's primitives

    hidden, mask = _encode_prompts(model, text_ids, text_mask, uncond_ids, uncond_mask, guided)
    first_batch = min(batch_size, num_images)
    cache = model.init_cache(hidden, mask, first_batch * (2 if guided else 1))  # reused by every batch
    generator = seeded_generator(seed, device)
    capture = device.type == "cuda" if capture is None else capture
    loops: dict[int, TokenLoop] = {}  # by batch rows: a smaller last batch gets its own (captured) step
    batches = []
    for start in range(0, num_images, batch_size):
        if between_batches is not None:
            between_batches(start, num_images)
        rows = min(batch_size, num_images - start)
        if rows not in loops:
            loops[rows] = TokenLoop(model, cache, rows, batch_size, guided, settings, codebook_size)
        batches.append(loops[rows].run(generator, capture).clone())
    codes = torch.cat(batches)
    if int(codes.max()) >= codebook_size or int(codes.min()) < 0:  # cannot happen with the mask; never hand over
        raise RuntimeError(f"sampled ids outside the codebook 0..{codebook_size - 1}")
    return codes
