"""`dalle`: DALL·E Mega candidates on `/`, appended to each prompt Document's matches."""

from pathlib import Path

from docarray import DocumentArray
from jina import requests

from dalle_flow.serving.executor import FlowExecutor
from dalle_flow.parameters import draw_seed
from dalle_flow.runtime.device import resolve_device
from dalle_flow.serving.limits import release_memory, request_limits
from dalle_flow.serving.outputs import image_document, request_timer
from dalle_flow.serving.parameters import PARAMETERS_ENDPOINT, declare_parameters, is_probe, require_prompts
from dalle_flow.serving.presets import is_tiny
from dalle_flow.serving.weights import resolve, resolve_group
from dalle_flow.pipelines.dalle_mega import BATCH_SIZE, DALLE_PARAMS, DalleMegaPipeline


class DalleMega(FlowExecutor):
    def __init__(self, device: str = "auto", dtype: str = "auto", batch_size: int = BATCH_SIZE.default,
                 preset: str | None = None, weights_dir: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.preset = "tiny" if is_tiny(preset) else "real"
        device, dtype = resolve_device(device, dtype)
        if self.preset == "tiny":
            self.pipeline = DalleMegaPipeline.tiny(device, batch_size)
            return
        files = resolve_group("dalle", weights_dir)
        vqgan = resolve_group("vqgan", weights_dir)
        self.pipeline = DalleMegaPipeline.from_files(
            files["config.json"], files["flax_model.msgpack"], Path(files["vocab.json"]).parent,
            resolve("dalle", "enwiki-words-frequency.txt", weights_dir), vqgan["config.json"],
            vqgan["flax_model.msgpack"], device, dtype, batch_size)

    @requests(on=PARAMETERS_ENDPOINT)
    def parameters(self, docs: DocumentArray, **kwargs):
        declare_parameters(docs, self.metas.name, {"/": DALLE_PARAMS})

    @requests(on="/")
    def generate(self, docs: DocumentArray, parameters: dict, **kwargs):
        if is_probe(docs):
            return
        started = request_timer()
        values = DALLE_PARAMS.parse(parameters)
        seed = values.pop("seed")
        seed = draw_seed() if seed is None else seed
        num_images = values.pop("num_images")
        limits = request_limits()
        limits.check_docs(docs, "/")
        limits.check_images(len(docs) * num_images, f"{len(docs)} Documents × num_images {num_images}")
        require_prompts(docs)
        deadline = limits.deadline(parameters)
        try:
            for doc in docs:
                images = self.pipeline.generate(doc.text, num_images, seed, between_batches=deadline.check, **values)
                doc.matches.extend(image_document(image, "DALLE-mega", doc.text, seed, started, self.preset,
                                                  **values) for image in images)
        finally:
            release_memory()
