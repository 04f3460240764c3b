"""`upscaler`: SwinIR x4 on /upscale, DALL·E Flow's last step (a chosen 256×256 candidate becomes 1024×1024).

A request Document is upscaled when it carries an image, and so is every match that carries one (a prompt Document
whose matches are the candidates). Whatever is already tagged `upscaled` is checked like any input but not upscaled
again, so posting the same Document twice does not upscale it twice. The output replaces `.uri` (a PNG data URI);
the candidate's own tags stay.
"""

from docarray import DocumentArray
from jina import requests

from dalle_flow.serving.executor import FlowExecutor
from dalle_flow.serving.images import MAX_IMAGE_SIDE, document_image, has_image, image_to_data_uri
from dalle_flow.serving.limits import release_memory, request_limits
from dalle_flow.serving.parameters import PARAMETERS_ENDPOINT, declare_parameters
from dalle_flow.serving.presets import is_tiny, preset_tags
from dalle_flow.serving.weights import resolve
from dalle_flow.runtime.device import resolve_device
from dalle_flow.models.swinir import load_swinir, tiny_swinir
from dalle_flow.pipelines.swinir import GPU_DEFAULT_DTYPE, check_tiling, upscale, upscale_params

SWINIR_FILE = "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth"
REAL_LABEL = "SwinIR-L real-SR x4 GAN"
TINY_LABEL = "SwinIR tiny x4 (random weights)"
# x4 of 1024 is 4096, the largest side any image may have in this Flow (serving.images.MAX_IMAGE_SIDE); untiled
# SwinIR-L memory grows with the pixel count, so larger inputs are refused rather than risked.
DEFAULT_MAX_INPUT_SIDE = 1024


class SwinIRUpscaler(FlowExecutor):
    def __init__(self, device: str = "auto", dtype: str = "auto", preset: str | None = None,
                 weights_dir: str | None = None, max_input_side: int = DEFAULT_MAX_INPUT_SIDE, **kwargs):
        super().__init__(**kwargs)
        self.preset = preset
        device, dtype = resolve_device(device, dtype, GPU_DEFAULT_DTYPE)
        if is_tiny(preset):
            self.model, self.label = tiny_swinir(device, dtype), TINY_LABEL
        else:
            # resolved here, not on the first request: a missing file stops the Flow at start with its name
            path = resolve("swinir", SWINIR_FILE, weights_dir)
            self.model, self.label = load_swinir(path, device=device, dtype=dtype), REAL_LABEL
        self.scale, self.window = self.model.upscale, self.model.window_size
        if not 1 <= int(max_input_side) <= MAX_IMAGE_SIDE // self.scale:
            raise ValueError(f"max_input_side: must be between 1 and {MAX_IMAGE_SIDE // self.scale} (x{self.scale} "
                             f"must stay within {MAX_IMAGE_SIDE} pixels), got {max_input_side!r}")
        self.max_input_side = int(max_input_side)
        self.params = upscale_params(self.window, self.max_input_side)

    @requests(on=PARAMETERS_ENDPOINT)
    def parameters(self, docs: DocumentArray, **kwargs):
        declare_parameters(docs, self.metas.name, {"/upscale": self.params})

    @requests(on="/upscale")
    def upscale_docs(self, docs: DocumentArray, parameters: dict = None, **kwargs):
        options = self.params.parse(parameters)
        limits = request_limits()
        limits.check_docs(docs, "/upscale")
        jobs = self._collect(docs, options)
        limits.check_images(len(jobs), f"images to upscale in {len(docs)} Documents")
        # every input is checked before the first image runs, and Documents change only once all have run: a bad
        # image in a request neither wastes the others' compute nor leaves the request half upscaled
        deadline = limits.deadline(parameters)
        outputs = []
        try:
            for _, image in jobs:
                deadline.check(len(outputs), len(jobs))
                outputs.append(upscale(self.model, image, **options))
            for (target, _), image in zip(jobs, outputs):
                self._write(target, image, options)
        finally:
            release_memory()

    def _collect(self, docs: DocumentArray, options: dict) -> list:
        jobs = []
        for i, doc in enumerate(docs):
            targets = [(doc, f"docs[{i}]")] if has_image(doc) else []
            targets += [(m, f"docs[{i}].matches[{j}]") for j, m in enumerate(doc.matches) if has_image(m)]
            if not targets:
                raise ValueError(f"docs[{i}]: carries no image to upscale; send the image inline (a data: URI, .blob "
                                 f"or .tensor), on the Document or on its matches")
            for target, field in targets:
                # a client can write any tag: an image tagged `upscaled` is not upscaled again, but it is checked
                # like any other input, so the tag cannot carry an arbitrary image past the size limits to the store
                image = self._checked_image(target, field, options)
                if not target.tags.get("upscaled"):
                    jobs.append((target, image))
        return jobs

    def _checked_image(self, doc, field: str, options: dict):
        try:
            image = document_image(doc, what=field)
        except ValueError as exc:  # its messages start with uri/blob/tensor: say which Document
            raise ValueError(f"{field}.{exc}") from None
        h, w = image.shape[:2]
        if max(h, w) > self.max_input_side:
            raise ValueError(f"{field}: image must be at most {self.max_input_side} pixels on each side to upscale "
                             f"x{self.scale} (to {self.max_input_side * self.scale}), got {w}×{h}")
        check_tiling(options["tile"], options["tile_overlap"], h, w, what=field)
        return image

    def _write(self, doc, image, options: dict):
        doc.uri = image_to_data_uri(image)
        doc.mime_type = "image/png"
        doc.blob, doc.tensor = None, None  # the image lives in .uri alone (docs/documents.md: no duplicate blob)
        tags = {"upscaled": True, "upscaler": self.label, "width": int(image.shape[1]), "height": int(image.shape[0])}
        if options["tile"] is not None:  # tiled pixels differ slightly from whole-image ones: say how it ran
            tags.update(tile=options["tile"], tile_overlap=options["tile_overlap"])
        doc.tags.update({**tags, **preset_tags(self.preset)})
