"""GLID-3 XL text-to-image and image refinement: BERT + CLIP conditioning, guided PLMS, KL-f8 decoding.

Reproduces DALL·E Flow's `/diffuse` path (dalle_flow_glid3 `sample.py:do_run`, `executors/glid3`):
- BERT context: the prompt wrapped in literal double quotes (the executor passed `--text '"<prompt>"'`); the blank
  context is BERT of "a". CLIP embeddings (conditional and blank) are supplied by the caller and used only by a
  checkpoint with `clip_proj`; otherwise they are ignored.
- Guidance: `guided_model_fn` (channels 0..2 guided, channel 3 unguided), PLMS with PRK warm-up, no clamping.
- Refinement: the image is resized to 256x256 with LANCZOS (no aspect preservation), mapped to [-1, 1], encoded,
  one posterior sample is drawn per request and scaled by kl_vae.SCALE_FACTOR (`image_to_latent`); the sampler
  skips int(steps * skip_rate) steps.
- Output (`latent_to_image`): pred_xstart / SCALE_FACTOR -> VAE decode -> (y + 1) / 2 clamped to [0, 1] -> *255
  truncated to uint8.

Randomness, per request: one CPU `torch.Generator` seeded with `seed`. In this order it draws: (refine only) the
posterior noise of the init image, (1, 4, h, w); then for each batch, in order, the start noise (2b, 4, h, w) where b
is the batch's image count. Images are batched in chunks of `batch_size`, so for a given seed the images depend on
`num_images` and `batch_size`, and are identical on CPU and GPU up to floating-point differences.

Deliberate differences from the reference: no intermediate previews (the reference divides pred_xstart by 0.18215
in place for previews, so its final latent is divided twice when the last step index is a multiple of 5 and steps
were skipped; here it is divided once, always); seeded noise instead of the global RNG; a request that would leave
fewer than `MIN_SAMPLING_STEPS` sampling steps is refused instead of returning NaN images or crashing.

Request parameters are declared once here (`GENERATE_PARAMS`, `REFINE_PARAMS`, with the skip_rate x steps rule);
the executor parses requests with them and `generate`/`refine` check their arguments with them.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from PIL import Image
from torch import nn

from dalle_flow.parameters import Param, Params, seed_param
from dalle_flow.models.glid3.guidance import guided_model_fn
from dalle_flow.models.glid3.kl_vae import image_to_latent, latent_to_image
from dalle_flow.models.glid3.loader import (load_bert_embedder, load_kl_vae, load_unet, tiny_bert_embedder,
                                            tiny_kl_vae, tiny_unet)
from dalle_flow.models.glid3.plms import MIN_SAMPLING_STEPS, PlmsSampler, initial_latents
from dalle_flow.models.glid3.schedule import SpacedSchedule
from dalle_flow.models.glid3.unet import UNet

# dtype 'auto' of the UNet on a GPU: float32, as the reference sampled (use_fp16=False). Half precision is opt-in
# (dtype: float16) until benchmarks/gpu_suite.py shows the final latent within HALF_TOLERANCE of float32.
UNET_GPU_DEFAULT_DTYPE = torch.float32
IMAGE_SIZE = 256
DIFFUSION_STEPS = 1000  # the trained diffusion process; respacing cannot exceed it
NUM_IMAGES_MAX = 36  # the seed README's step 2 asks for 36 refinements in one call; batched by `batch_size`


def skipped_steps(steps: int, skip_rate: float) -> int:
    return int(steps * skip_rate)  # float truncation, as DALL·E Flow: int(100 * 0.29) == 28


def enough_sampling_steps(values: dict) -> None:
    """Refinement skips int(steps * skip_rate) steps; PLMS's warm-up needs MIN_SAMPLING_STEPS of the rest."""
    steps, skip_rate = values["steps"], values["skip_rate"]
    skip = skipped_steps(steps, skip_rate)
    if steps - skip < MIN_SAMPLING_STEPS:
        limit = (steps - MIN_SAMPLING_STEPS) / steps
        raise ValueError(f"skip_rate: {skip_rate} skips {skip} of {steps} steps and leaves {steps - skip}; at least "
                         f"{MIN_SAMPLING_STEPS} must remain (skip_rate <= {limit:g} for steps={steps})")


# Text to image (`/`). skip_rate is declared here too: a request naming it is checked even when nothing is refined.
GENERATE_PARAMS = Params((
    Param("num_images", "int", default=2, low=1, high=NUM_IMAGES_MAX),  # a few next to DALL·E Mega's candidates
    Param("skip_rate", "float", default=0.5, low=0, high=1),  # 0 improvises, 1 stays close to the image
    Param("steps", "int", default=100, low=MIN_SAMPLING_STEPS, high=DIFFUSION_STEPS),  # DALL·E Flow's respacing
    Param("guidance_scale", "float", default=5.0, low=0, high=50),  # dalle_flow_glid3's cli default
    seed_param(),
))
# Refinement (`/diffuse`, or `/` for a Document carrying an image): the seed README indexes diffused[34].
REFINE_PARAMS = GENERATE_PARAMS.with_defaults(num_images=NUM_IMAGES_MAX).with_rules(enough_sampling_steps)
BATCH_SIZE = Param("batch_size", "int", default=8, low=1, high=NUM_IMAGES_MAX)  # rows per UNet call: 2 x batch_size


@lru_cache(maxsize=16)
def spaced_schedule(steps: int, diffusion_steps: int = DIFFUSION_STEPS) -> SpacedSchedule:
    return SpacedSchedule.create(steps, diffusion_steps)


class Glid3Pipeline:
    def __init__(self, unet: UNet, kl_vae: nn.Module, bert: nn.Module, device: torch.device | str | None = None,
                 image_size: int = IMAGE_SIZE):
        """unet: `UNet`; kl_vae: `.encode(x in [-1,1]) -> (mean, logvar)`, `.decode(unscaled z) -> image in ~[-1,1]`;
        bert: `.encode(list[str]) -> (N, 77, context_dim)`. All three must already sit on `device`."""
        self.unet, self.kl_vae, self.bert = unet, kl_vae, bert
        self.device = torch.device(device) if device is not None else next(unet.parameters()).device
        self.image_size = int(image_size)
        self.latent_size = self.image_size // 8
        with torch.inference_mode():
            self.blank_context = self._bert(["a"])  # (1, 77, C), the reference's negative text
        if self.blank_context.shape[-1] != unet.config.context_dim:
            raise ValueError(f"BERT embeddings have width {self.blank_context.shape[-1]} but the UNet expects "
                             f"context_dim={unet.config.context_dim}")

    @classmethod
    def from_weights(cls, unet_path, kl_path, bert_path, vocab_path, device="cpu",
                     dtype: torch.dtype = torch.float32) -> "Glid3Pipeline":
        """Real checkpoints: finetune.pt (UNet in `dtype`), kl-f8.pt and bert.pt + vocab.txt (float32)."""
        unet = load_unet(unet_path, device=device, dtype=dtype)
        kl = load_kl_vae(kl_path, device)
        bert = load_bert_embedder(bert_path, vocab_path, device)
        return cls(unet, kl, bert, device)

    @classmethod
    def tiny(cls, device="cpu", dtype: torch.dtype = torch.float32, clip_embed_dim: int | None = None,
             seed: int = 0) -> "Glid3Pipeline":
        """Tiny random models end to end (no files), 256x256 output: for tests and the tiny preset."""
        bert = tiny_bert_embedder(device)
        unet = tiny_unet(device, dtype, seed, context_dim=bert.config.n_embed, clip_embed_dim=clip_embed_dim)
        return cls(unet, tiny_kl_vae(device), bert, device)

    # -- public API -------------------------------------------------------------------------------------------------

    def generate(self, prompt: str, num_images: int, seed: int, steps: int = GENERATE_PARAMS.default("steps"),
                 guidance_scale: float = GENERATE_PARAMS.default("guidance_scale"), clip_embed=None,
                 blank_clip_embed=None, batch_size: int = BATCH_SIZE.default, between_batches=None) -> np.ndarray:
        """Text to images: (num_images, 256, 256, 3) uint8. Arguments are checked with GENERATE_PARAMS.
        between_batches(done, total) runs before each batch and may raise to stop (a request's deadline)."""
        p = GENERATE_PARAMS.parse(dict(num_images=num_images, seed=seed, steps=steps, guidance_scale=guidance_scale))
        return self._run(_prompt(prompt), p["num_images"], p["seed"], p["steps"], p["guidance_scale"], clip_embed,
                         blank_clip_embed, BATCH_SIZE.convert(batch_size), image=None, skip=0,
                         between_batches=between_batches)

    def refine(self, image: np.ndarray, prompt: str, num_images: int, seed: int,
               steps: int = REFINE_PARAMS.default("steps"),
               guidance_scale: float = REFINE_PARAMS.default("guidance_scale"),
               skip_rate: float = REFINE_PARAMS.default("skip_rate"), clip_embed=None, blank_clip_embed=None,
               batch_size: int = BATCH_SIZE.default, between_batches=None) -> np.ndarray:
        """Refine an image (HWC RGB uint8, any size) towards the prompt: (num_images, 256, 256, 3) uint8. Arguments
        are checked with REFINE_PARAMS (so a skip_rate leaving too few steps is refused)."""
        p = REFINE_PARAMS.parse(dict(num_images=num_images, seed=seed, steps=steps, guidance_scale=guidance_scale,
                                     skip_rate=skip_rate))
        return self._run(_prompt(prompt), p["num_images"], p["seed"], p["steps"], p["guidance_scale"], clip_embed,
                         blank_clip_embed, BATCH_SIZE.convert(batch_size), image=_image_array(image),
                         skip=skipped_steps(p["steps"], p["skip_rate"]), between_batches=between_batches)

    # -- internals --------------------------------------------------------------------------------------------------

    def _bert(self, texts: list[str]) -> torch.Tensor:
        return self.bert.encode(texts).float().to(self.device)

    def _clip_rows(self, clip_embed, blank_clip_embed) -> tuple[torch.Tensor, torch.Tensor] | None:
        dim = self.unet.config.clip_embed_dim
        if dim is None:
            return None  # checkpoint without clip_proj: CLIP plays no part, as in the reference
        rows = []
        for name, value in (("clip_embed", clip_embed), ("blank_clip_embed", blank_clip_embed)):
            if value is None:
                raise ValueError(f"{name}: this GLID-3 checkpoint is CLIP-conditioned and needs a {dim}-d embedding")
            t = torch.as_tensor(np.asarray(value, dtype=np.float32)).reshape(-1)
            if t.numel() != dim or not torch.isfinite(t).all():
                raise ValueError(f"{name}: must be {dim} finite numbers, got shape {tuple(np.shape(value))}")
            rows.append(t.to(self.device)[None])
        return rows[0], rows[1]

    @torch.inference_mode()
    def _run(self, prompt, num_images, seed, steps, guidance_scale, clip_embed, blank_clip_embed, batch_size, image,
             skip, between_batches=None) -> np.ndarray:
        clip = self._clip_rows(clip_embed, blank_clip_embed)
        text_context = self._bert([f'"{prompt}"'])
        schedule = spaced_schedule(int(steps))
        sampler = PlmsSampler(schedule)
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        init = self._encode_init(image, generator) if image is not None else None
        shape = (self.unet.config.out_channels, self.latent_size, self.latent_size)

        images = []
        for start in range(0, num_images, batch_size):
            if between_batches is not None:
                between_batches(start, num_images)
            b = min(batch_size, num_images - start)
            noise = torch.randn((2 * b, *shape), generator=generator).to(self.device)
            context = torch.cat([text_context.expand(b, -1, -1), self.blank_context.expand(b, -1, -1)])
            clip_rows = None if clip is None else torch.cat([clip[0].expand(b, -1), clip[1].expand(b, -1)])
            image_embed = None
            if self.unet.config.image_condition:  # inpainting checkpoints get an empty image, as sample.py does
                image_embed = torch.zeros_like(noise)
            model_fn = guided_model_fn(self.unet, context, float(guidance_scale), clip_rows, image_embed)
            x_t, start_index = initial_latents(schedule, noise, init, skip)
            latents = sampler.sample(model_fn, x_t, start_index)[:b]
            images.append(self._decode(latents))
        return np.concatenate(images)

    def _encode_init(self, image: np.ndarray, generator: torch.Generator) -> torch.Tensor:
        pil = Image.fromarray(image).convert("RGB").resize((self.image_size, self.image_size), Image.LANCZOS)
        x01 = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        # the parity-tested helper: encode, one posterior sample drawn from `generator`, scaled into diffusion space
        return image_to_latent(self.kl_vae, x01.to(self.device, self._vae_dtype()), generator).float()

    def _decode(self, latents: torch.Tensor) -> np.ndarray:
        y = latent_to_image(self.kl_vae, latents.to(self._vae_dtype()))
        # mul(255) then truncation to uint8, as torchvision's to_pil_image
        return y.mul(255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    def _vae_dtype(self) -> torch.dtype:
        param = next(self.kl_vae.parameters(), None)
        return param.dtype if param is not None else torch.float32


def _prompt(prompt) -> str:
    if not isinstance(prompt, str):
        raise ValueError(f"prompt: must be a string, got {type(prompt).__name__}")
    return prompt


def _image_array(image) -> np.ndarray:
    """uint8 HxW (grey), HxWx3 (RGB) or HxWx4 (RGBA; alpha dropped as PIL's convert('RGB') does)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError("image: must be a uint8 numpy array (H, W, 3) RGB")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))) or min(image.shape[:2]) < 1:
        raise ValueError(f"image: must have shape (H, W, 3), got {image.shape}")
    return np.ascontiguousarray(image)
