"""`diffusion`: GLID-3 XL. On `/` it adds text-to-image candidates for each prompt (then `rerank` ranks them with the
other generators'); on `/diffuse`, and on `/` for a Document that carries an image, it refines that image.

Parameters: the pipeline's declarations (`GENERATE_PARAMS` for text, `REFINE_PARAMS` for an image, with this
server's configured default `steps`), parsed once per mode present in the request before anything runs; `seed` is
drawn per Document when absent and returned in tags.

CLIP conditioning is used only when finetune.pt has a `clip_proj` (the pipeline reads that off the file): the prompt's
CLIP embedding is the Document's `.embedding` (one the client sent) or, when absent, computed here; the blank
embedding is CLIP of the empty prompt, computed once at start-up. Without `clip_proj`, CLIP is not loaded at all.
"""

import numpy as np
from docarray import DocumentArray
from jina import requests

from dalle_flow.serving.executor import FlowExecutor
from dalle_flow.parameters import draw_seed
from dalle_flow.runtime.device import resolve_device
from dalle_flow.serving.images import document_image, has_image
from dalle_flow.serving.limits import release_memory, request_limits
from dalle_flow.serving.outputs import image_document, request_timer
from dalle_flow.serving.parameters import PARAMETERS_ENDPOINT, declare_parameters, document_prompt, is_probe
from dalle_flow.serving.presets import is_tiny
from dalle_flow.serving.weights import resolve, resolve_hf_model
from dalle_flow.models.clip import DEFAULT_CLIP, ClipEmbedder, load_clip, tiny_clip
from dalle_flow.pipelines.glid3 import (BATCH_SIZE, GENERATE_PARAMS, REFINE_PARAMS, UNET_GPU_DEFAULT_DTYPE,
                                        Glid3Pipeline)

GENERATOR = "GLID3-XL"
WEIGHT_FILES = ("finetune.pt", "kl-f8.pt", "bert.pt", "vocab.txt")
TINY_STEPS = 10  # default steps under the tiny preset: random weights gain nothing from more; tests stay fast


def prompt_clip_embedding(doc, prompt: str, clip: ClipEmbedder | None, dim: int | None, what: str):
    """The CLIP embedding that conditions a `clip_proj` checkpoint: the Document's own when it has one (a client's,
    e.g. a `/` answer posted again), else CLIP of the prompt. None when the checkpoint takes no CLIP embedding."""
    if dim is None:
        return None
    if doc.embedding is not None:
        embedding = np.asarray(doc.embedding, dtype=np.float32)
        if embedding.shape != (dim,) or not np.all(np.isfinite(embedding)):
            raise ValueError(f"{what}.embedding: must be a {dim}-d CLIP embedding of the prompt (or absent, then "
                             f"the server computes it), got shape {embedding.shape}")
        return embedding
    return clip.encode_text([prompt])[0]


def load_pipeline(device: str, dtype: str, preset: str | None, clip_model_name: str, weights_dir: str | None):
    """(pipeline, CLIP or None). Real files are resolved before anything loads, so a missing one fails first."""
    # the UNet's dtype (the reference's float32 by default): BERT and the VAE stay float32 in the pipeline
    device, dtype = resolve_device(device, dtype, UNET_GPU_DEFAULT_DTYPE)
    if is_tiny(preset):
        clip = tiny_clip(device)
        # the tiny UNet gets a clip_proj of the tiny CLIP's width, so the tiny Flow runs the CLIP-conditioned path
        return Glid3Pipeline.tiny(device, dtype, clip_embed_dim=clip.embedding_dim), clip
    paths = [resolve("glid3", name, weights_dir) for name in WEIGHT_FILES]
    pipeline = Glid3Pipeline.from_weights(*paths, device=device, dtype=dtype)
    dim = pipeline.unet.config.clip_embed_dim
    if dim is None:
        return pipeline, None
    clip = load_clip(resolve_hf_model("clip", clip_model_name, weights_dir), device, dtype)
    if clip.embedding_dim != dim:
        raise ValueError(f"finetune.pt projects {dim}-d CLIP embeddings but {clip_model_name} produces "
                         f"{clip.embedding_dim}-d ones; set clip_model_name to the CLIP it was trained with")
    return pipeline, clip


class GLID3Diffusion(FlowExecutor):
    def __init__(self, device: str = "auto", dtype: str = "auto", batch_size: int = BATCH_SIZE.default,
                 steps: int = GENERATE_PARAMS.default("steps"), tiny_steps: int = TINY_STEPS,
                 clip_model_name: str = DEFAULT_CLIP, preset: str | None = None, weights_dir: str | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.preset = preset
        # configuration mistakes stop the start instead of failing every request
        self.batch_size = BATCH_SIZE.convert(batch_size)
        default_steps = tiny_steps if is_tiny(preset) else steps
        self.params = {False: GENERATE_PARAMS.with_defaults(steps=default_steps),
                       True: REFINE_PARAMS.with_defaults(steps=default_steps)}  # keyed by "refine"
        self.default_steps = self.params[False].default("steps")
        self.pipeline, self.clip = load_pipeline(device, dtype, preset, clip_model_name, weights_dir)
        self.clip_dim = self.pipeline.unet.config.clip_embed_dim
        # the reference's blank (unconditional) CLIP row: CLIP of the empty prompt, from the same CLIP model
        self.blank_clip = None if self.clip is None else self.clip.encode_text([""])[0]

    @requests(on=PARAMETERS_ENDPOINT)
    def parameters(self, docs: DocumentArray, **kwargs):
        declare_parameters(docs, self.metas.name, {"/": self.params[False], "/diffuse": self.params[True]})

    @requests(on="/")
    def generate(self, docs: DocumentArray, parameters: dict, **kwargs):
        """Text -> candidates for a prompt Document; a Document carrying an image is refined instead (the later
        original's `/` with target_executor='diffusion')."""
        if not is_probe(docs):
            self._run(docs, parameters, image_required=False)

    @requests(on="/diffuse")
    def diffuse(self, docs: DocumentArray, parameters: dict, **kwargs):
        self._run(docs, parameters, image_required=True)

    def _run(self, docs: DocumentArray, parameters: dict, image_required: bool):
        request_time = request_timer()
        refines = [image_required or has_image(doc) for doc in docs]
        # each mode's declaration once, before any Document is read: a skip_rate leaving too few steps fails here
        settings = {refine: self.params[refine].parse(parameters) for refine in set(refines) or {image_required}}
        limits = request_limits()
        limits.check_docs(docs, "/diffuse" if image_required else "/")
        jobs = []
        for i, (doc, refine) in enumerate(zip(docs, refines)):
            what = f"docs[{i}]"
            image = document_image(doc, what) if refine else None
            prompt = document_prompt(doc, what)
            clip_embed = prompt_clip_embedding(doc, prompt, self.clip, self.clip_dim, what)
            jobs.append((doc, prompt, image, clip_embed))
        self._check_work(jobs, settings, limits)
        deadline = limits.deadline(parameters)
        try:
            self._sample(jobs, settings, request_time, deadline)
        finally:
            release_memory()

    @staticmethod
    def _check_work(jobs, settings, limits):
        """Images and image-steps of the whole request, against the limits, before the first image is sampled."""
        plans = [(settings[image is not None]["num_images"], settings[image is not None]["steps"])
                 for _, _, image, _ in jobs]
        limits.check_images(sum(n for n, _ in plans), f"num_images summed over {len(plans)} Documents")
        limits.check_diffusion_work(sum(n * steps for n, steps in plans),
                                    f"num_images × steps summed over {len(plans)} Documents")

    def _sample(self, jobs, settings, request_time, deadline):
        for doc, prompt, image, clip_embed in jobs:
            p = settings[image is not None]
            seed = p["seed"] if p["seed"] is not None else draw_seed()
            common = dict(prompt=prompt, num_images=p["num_images"], seed=seed, steps=p["steps"],
                          guidance_scale=p["guidance_scale"], clip_embed=clip_embed,
                          blank_clip_embed=self.blank_clip, batch_size=self.batch_size,
                          between_batches=deadline.check)
            tags = dict(steps=p["steps"], guidance_scale=p["guidance_scale"], num_images=p["num_images"])
            if image is None:
                images = self.pipeline.generate(**common)
            else:
                images = self.pipeline.refine(image, skip_rate=p["skip_rate"], **common)
                tags["skip_rate"] = p["skip_rate"]
            for k, img in enumerate(images):
                match = image_document(img, GENERATOR, prompt, seed, request_time, preset=self.preset,
                                       image_index=k, **tags)
                doc.matches.append(match)
