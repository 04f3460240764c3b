"""`dalle`: DALL·E Mega candidates on `/`, appended to each prompt Document's matches."""
from __future__ import annotations

from pathlib import Path

from docarray import DocumentArray
from jina import Executor, requests

from dalle_flow.serving.outputs import image_document, request_timer
from dalle_flow.serving.parameters import Param, draw_seed, parse, require_prompts, seed_param
from dalle_flow.serving.presets import is_tiny
from dalle_flow.serving.weights import resolve, resolve_group
from dalle_flow.pipelines.dalle_mega import DALLE_DEFAULTS, DalleMegaPipeline

MAX_IMAGES = 32  # per prompt and request; batched on the device in groups of `batch_size`
PARAMS = [
    Param("num_images", "int", default=8, low=1, high=MAX_IMAGES),
    seed_param(),
    Param("cond_scale", "float", default=DALLE_DEFAULTS["cond_scale"], low=1.0, high=100.0),
    Param("top_k", "int", default=DALLE_DEFAULTS["top_k"], low=1, high=16384),
    Param("top_p", "float", default=DALLE_DEFAULTS["top_p"], low=0.01, high=1.0),
    Param("temperature", "float", default=DALLE_DEFAULTS["temperature"], low=0.01, high=10.0),
]


class DalleMega(Executor):
    def __init__(self, device: str = "auto", dtype: str = "auto", batch_size: int = 16, preset: str | None = None,
                 weights_dir: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.preset = "tiny" if is_tiny(preset) else "real"
        if self.preset == "tiny":
            self.pipeline = DalleMegaPipeline.tiny(device, batch_size)
            return
        files = resolve_group("dalle", weights_dir)
        vqgan = resolve_group("vqgan", weights_dir)
        self.pipeline = DalleMegaPipeline.from_files(
            files["config.json"], files["flax_model.msgpack"], Path(files["vocab.json"]).parent,
            resolve("dalle", "enwiki-words-frequency.txt", weights_dir), vqgan["config.json"],
            vqgan["flax_model.msgpack"], device, dtype, batch_size)

    @requests(on="/")
    def generate(self, docs: DocumentArray, parameters: dict, **kwargs):
        started = request_timer()
        values = parse(parameters, PARAMS)
        seed = values.pop("seed")
        seed = draw_seed() if seed is None else seed
        num_images = values.pop("num_images")
        require_prompts(docs)
        for doc in docs:
            images = self.pipeline.generate(doc.text, num_images, seed, **values)
            doc.matches.extend(image_document(image, "DALLE-mega", doc.text, seed, started, self.preset, **values)
                               for image in images)
