"""`diffusion`: GLID-3 XL. On `/` it adds text-to-image candidates for each prompt (then `rerank` ranks them with the
other generators'); on `/diffuse`, and on `/` for a Document that carries an image, it refines that image.

Parameters (validated, see `request_params`): `num_images` (1..36; default 2 candidates on `/`, 36 refinements like
the seed README's step 2), `skip_rate` (0..1, default 0.5), `steps` (default 100), `guidance_scale` (default 5.0),
`seed` (drawn per Document when absent, returned in tags).

CLIP conditioning is used only when finetune.pt has a `clip_proj` (the pipeline reads that off the file): the prompt's
CLIP embedding is the Document's `.embedding` (set on `/` by `clip_encoder`) or, when absent, computed here; the blank
embedding is CLIP of the empty prompt, computed once at start-up. Without `clip_proj`, CLIP is not loaded at all.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
from docarray import DocumentArray
from jina import Executor, requests

from dalle_flow.runtime.device import pick_device, pick_dtype
from dalle_flow.serving.images import document_image, has_image
from dalle_flow.serving.outputs import image_document, request_timer
from dalle_flow.serving.parameters import Param, draw_seed, parse, seed_param
from dalle_flow.serving.presets import is_tiny
from dalle_flow.serving.weights import resolve, resolve_hf_model
from dalle_flow.models.clip import DEFAULT_CLIP, ClipEmbedder
from dalle_flow.pipelines.glid3 import GLID3_DEFAULTS, Glid3Pipeline

GENERATOR = "GLID3-XL"
NUM_IMAGES_MAX = 36  # the seed README's step 2 asks for 36 refinements in one call; batched by `batch_size`
GENERATE_NUM_IMAGES = 2  # candidates per prompt on `/` when not asked: GLID-3 adds a few next to DALL·E Mega's
REFINE_NUM_IMAGES = 36  # refinements on /diffuse when not asked: the seed README indexes diffused[34]
STEPS_MAX = 1000  # the diffusion process has 1000 steps; respacing cannot exceed them
GUIDANCE_MAX = 50.0
WEIGHT_FILES = ("finetune.pt", "kl-f8.pt", "bert.pt", "vocab.txt")
STEPS_PARAM = Param("steps", "int", low=GLID3_DEFAULTS.min_sampling_steps, high=STEPS_MAX)


def request_params(parameters: dict | None, refine: bool, default_steps: int) -> dict:
    """The request's GLID-3 parameters, validated; only the default `num_images` differs between the two modes."""
    specs = [
        Param("num_images", "int", default=REFINE_NUM_IMAGES if refine else GENERATE_NUM_IMAGES, low=1,
              high=NUM_IMAGES_MAX),
        Param("skip_rate", "float", default=GLID3_DEFAULTS.skip_rate, low=0, high=1),
        replace(STEPS_PARAM, default=default_steps),
        Param("guidance_scale", "float", default=GLID3_DEFAULTS.guidance_scale, low=0, high=GUIDANCE_MAX),
        seed_param(),
    ]
    return parse(parameters, specs)


def document_prompt(doc, what: str) -> str:
    """The prompt: `.text`, else the `text` tag that every generated candidate carries (step 1's matches have no
    `.text`, and the seed README posts such a match to /diffuse as it is)."""
    prompt = doc.text or doc.tags.get("text")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"{what}.text: the prompt is empty; send the prompt in .text (or tags['text'])")
    return prompt


def prompt_clip_embedding(doc, prompt: str, clip: ClipEmbedder | None, dim: int | None, what: str):
    """The CLIP embedding that conditions a `clip_proj` checkpoint: the Document's own when it has one (clip_encoder
    sets it on `/`), else CLIP of the prompt. None when the checkpoint takes no CLIP embedding."""
    if dim is None:
        return None
    if doc.embedding is not None:
        embedding = np.asarray(doc.embedding, dtype=np.float32)
        if embedding.shape != (dim,) or not np.all(np.isfinite(embedding)):
            raise ValueError(f"{what}.embedding: must be a {dim}-d CLIP embedding of the prompt (or absent, then "
                             f"the server computes it), got shape {embedding.shape}")
        return embedding
    return clip.encode_text([prompt])[0]


def load_pipeline(device: str, dtype: str, preset: str | None, clip_model_name: str):
    """(pipeline, CLIP or None). Real files are resolved before anything loads, so a missing one fails first."""
    device_ = pick_device(device)
    unet_dtype = pick_dtype(device_, dtype)  # BERT and the VAE stay float32 inside the pipeline
    if is_tiny(preset):
        clip = ClipEmbedder.tiny(str(device_))
        # the tiny UNet gets a clip_proj of the tiny CLIP's width, so the tiny Flow runs the CLIP-conditioned path
        return Glid3Pipeline.tiny(device_, unet_dtype, clip_embed_dim=clip.embedding_dim), clip
    paths = [resolve("glid3", name) for name in WEIGHT_FILES]
    pipeline = Glid3Pipeline.from_weights(*paths, device=device_, dtype=unet_dtype)
    dim = pipeline.unet.config.clip_embed_dim
    if dim is None:
        return pipeline, None
    clip = ClipEmbedder.from_pretrained(resolve_hf_model("clip", clip_model_name), str(device_), dtype)
    if clip.embedding_dim != dim:
        raise ValueError(f"finetune.pt projects {dim}-d CLIP embeddings but {clip_model_name} produces "
                         f"{clip.embedding_dim}-d ones; set clip_model_name to the CLIP it was trained with")
    return pipeline, clip


class GLID3Diffusion(Executor):
    def __init__(self, device: str = "auto", dtype: str = "auto", batch_size: int = GLID3_DEFAULTS.batch_size,
                 steps: int = GLID3_DEFAULTS.steps, tiny_steps: int = 10, clip_model_name: str = DEFAULT_CLIP,
                 preset: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.preset = preset
        # configuration mistakes stop the start instead of failing every request
        self.batch_size = Param("batch_size", "int", low=1, high=NUM_IMAGES_MAX).convert(batch_size)
        self.default_steps = STEPS_PARAM.convert(tiny_steps if is_tiny(preset) else steps)
        self.pipeline, self.clip = load_pipeline(device, dtype, preset, clip_model_name)
        self.clip_dim = self.pipeline.unet.config.clip_embed_dim
        # the reference's blank (unconditional) CLIP row: CLIP of the empty prompt, from the same CLIP model
        self.blank_clip = None if self.clip is None else self.clip.encode_text([""])[0]

    @requests(on="/")
    def generate(self, docs: DocumentArray, parameters: dict, **kwargs):
        """Text -> candidates for a prompt Document; a Document carrying an image is refined instead (the later
        original's `/` with target_executor='diffusion')."""
        self._run(docs, parameters, image_required=False)

    @requests(on="/diffuse")
    def diffuse(self, docs: DocumentArray, parameters: dict, **kwargs):
        self._run(docs, parameters, image_required=True)

    def _run(self, docs: DocumentArray, parameters: dict, image_required: bool):
        request_time = request_timer()
        settings = {refine: request_params(parameters, refine, self.default_steps) for refine in (False, True)}
        jobs = []
        for i, doc in enumerate(docs):  # everything is checked before the first image is sampled
            what = f"docs[{i}]"
            image = document_image(doc, what) if image_required or has_image(doc) else None
            prompt = document_prompt(doc, what)
            clip_embed = prompt_clip_embedding(doc, prompt, self.clip, self.clip_dim, what)
            jobs.append((doc, prompt, image, clip_embed))
        # refinements first: the pipeline refuses a skip_rate leaving too few steps before it samples anything
        for doc, prompt, image, clip_embed in sorted(jobs, key=lambda job: job[2] is None):
            p = settings[image is not None]
            seed = p["seed"] if p["seed"] is not None else draw_seed()
            common = dict(prompt=prompt, num_images=p["num_images"], seed=seed, steps=p["steps"],
                          guidance_scale=p["guidance_scale"], clip_embed=clip_embed,
                          blank_clip_embed=self.blank_clip, batch_size=self.batch_size)
            tags = dict(steps=p["steps"], guidance_scale=p["guidance_scale"], num_images=p["num_images"])
            if image is None:
                images = self.pipeline.generate(**common)
            else:
                # (the reference returned NaN images for such a skip_rate; the ValueError reaches the client instead)
                images = self.pipeline.refine(image, skip_rate=p["skip_rate"], **common)
                tags["skip_rate"] = p["skip_rate"]
            for k, img in enumerate(images):
                match = image_document(img, GENERATOR, prompt, seed, request_time, preset=self.preset,
                                       image_index=k, **tags)
                doc.matches.append(match)
