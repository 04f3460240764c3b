"""`clipseg`: text-prompted segmentation on /segment (CLIPSeg), as DALL·E Flow's /segment offered it.

Request: `.uri` (or `.blob`/`.tensor`) = inline image, `.text` = what to segment (or `tags['text']`: a `.blob` or
`.tensor` Document has no `.text`). Response: the same Document with `.uri` = the image as RGBA PNG whose alpha is
the mask (the prompt's region transparent by default, ready for inpainting; `invert: true` makes it the opaque
part), the mask alone as a chunk (grayscale PNG, kind `alpha_mask`), and the RGBA image also appended as a match
with `.text` = the prompt, as the original returned it (clients read `post('/segment')[0].matches[0]`).
"""

from docarray import Document, DocumentArray
from jina import requests

from dalle_flow.serving.executor import FlowExecutor
from dalle_flow.runtime.device import resolve_device
from dalle_flow.serving.images import document_image, image_to_data_uri
from dalle_flow.serving.parameters import PARAMETERS_ENDPOINT, declare_parameters, document_prompt
from dalle_flow.serving.limits import request_limits
from dalle_flow.serving.presets import is_tiny, preset_tags
from dalle_flow.serving.weights import CLIPSEG_REPO, resolve_hf_model
from dalle_flow.models.clipseg import load_clipseg, tiny_clipseg
from dalle_flow.pipelines.clipseg import SEGMENT_PARAMS, apply_threshold, rgba, segment

TINY_LABEL = "CLIPSeg tiny (random weights)"
MASK_KIND = "alpha_mask"
SEGMENTED_KIND = "segmented_image"  # the RGBA match
# which parameters a thresholding type reads; the others are not reported in tags, since they had no effect
USED_BY_TYPE = {"none": (), "binary": ("binary_thresh_strength",),
                "adaptive_mean": ("adaptive_thresh_block_size", "adaptive_thresh_c"),
                "adaptive_gaussian": ("adaptive_thresh_block_size", "adaptive_thresh_c")}


class ClipSegmenter(FlowExecutor):
    def __init__(self, model_name: str = CLIPSEG_REPO, device: str = "auto", dtype: str = "auto",
                 preset: str | None = None, weights_dir: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.preset = preset
        device, dtype = resolve_device(device, dtype)
        if is_tiny(preset):
            self.model, self.processor = tiny_clipseg(device, dtype)
            self.label = TINY_LABEL
        else:
            # resolved and loaded at start-up, so missing files stop the Flow before the first request
            self.model, self.processor = load_clipseg(resolve_hf_model("clipseg", model_name, weights_dir), device,
                                                      dtype)
            self.label = f"CLIPSeg {model_name}"

    @requests(on=PARAMETERS_ENDPOINT)
    def parameters(self, docs: DocumentArray, **kwargs):
        declare_parameters(docs, self.metas.name, {"/segment": SEGMENT_PARAMS})

    @requests(on="/segment")
    def segment_docs(self, docs: DocumentArray, parameters: dict = None, **kwargs):
        options = SEGMENT_PARAMS.parse(parameters)
        limits = request_limits()
        limits.check_docs(docs, "/segment")
        # every Document is checked before the model runs on any of them: a bad one fails the request cleanly
        inputs = [self._checked_input(doc, f"docs[{i}]") for i, doc in enumerate(docs)]
        deadline = limits.deadline(parameters)
        results = []
        for image, prompt in inputs:
            deadline.check(len(results), len(inputs))
            alpha = apply_threshold(segment(self.model, self.processor, image, prompt), **options)
            results.append((rgba(image, alpha), alpha, prompt))
        for doc, (image, alpha, prompt) in zip(docs, results):
            self._write(doc, image, alpha, prompt, options)

    @staticmethod
    def _checked_input(doc, field: str):
        prompt = document_prompt(doc, field, hint="say what to segment, e.g. Document(uri='data:image/png;base64,"
                                                  "...', text='the cat'); got an empty text")
        try:
            image = document_image(doc, what=field)
        except ValueError as exc:  # its messages start with uri/blob/tensor: say which Document
            raise ValueError(f"{field}.{exc}") from None
        return image, prompt

    def _write(self, doc, image, alpha, prompt: str, options: dict):
        kind = options["thresholding_type"]
        settings = {"thresholding_type": kind, "invert": options["invert"],
                    **{name: options[name] for name in USED_BY_TYPE[kind]}}
        labels = {"segmenter": self.label, **settings, **preset_tags(self.preset)}
        uri = image_to_data_uri(image)
        doc.uri = uri
        doc.mime_type = "image/png"
        doc.blob, doc.tensor = None, None  # the image lives in .uri alone (docs/documents.md: no duplicate blob)
        doc.text = prompt  # a .blob/.tensor request had it in tags only; now it has the original's form
        doc.tags.update({"segmented": True, **labels})
        # a Document segmented again gets its new mask and match instead of a second one
        doc.chunks = DocumentArray([c for c in doc.chunks if c.tags.get("kind") != MASK_KIND])
        doc.chunks.append(Document(
            uri=image_to_data_uri(alpha), mime_type="image/png", text=prompt,
            tags={"kind": MASK_KIND, "prompt_region": "opaque" if options["invert"] else "transparent", **labels}))
        doc.matches = DocumentArray([m for m in doc.matches if m.tags.get("kind") != SEGMENTED_KIND])
        doc.matches.append(Document(uri=uri, mime_type="image/png", text=prompt,
                                    tags={"kind": SEGMENTED_KIND, "text": prompt, "segmented": True, **labels}))
