"""`rerank`: the Flow's one CLIP. It sits after the generators' merge and serves CLIP-as-service's `/encode` and
`/rank` (requests for those pass the generators untouched) and, on `/`, embeds each prompt and ranks every candidate
of every generator by its image, best first.

One executor, so the Flow holds one copy of CLIP (ViT-L/14@336: 0.8 GiB of fp16 weights, its activations and a CUDA
context). It answers after the merge, so no merge can undo its order (Jina's merge reduces the branches' Documents
and matches in arrival order, unsorted).
"""

import numpy as np
from docarray import DocumentArray
from jina import requests

from dalle_flow.serving.executor import FlowExecutor
from dalle_flow.serving.clip_protocol import clip_input, drop_image_content, refuse_unsupported_parameters
from dalle_flow.serving.limits import request_limits
from dalle_flow.serving.parameters import PARAMETERS_ENDPOINT, document_prompt, is_probe
from dalle_flow.serving.presets import is_tiny
from dalle_flow.serving.weights import resolve_hf_model
from dalle_flow.runtime.device import resolve_device
from dalle_flow.models.clip import DEFAULT_CLIP, ClipEmbedder, load_clip, rank_scores, tiny_clip


def clip_for(model_name: str, device: str, dtype: str, preset: str | None, weights_dir: str | None) -> ClipEmbedder:
    device, dtype = resolve_device(device, dtype)
    if is_tiny(preset):
        return tiny_clip(device)  # float32 whatever the device: it is tiny
    return load_clip(resolve_hf_model("clip", model_name, weights_dir), device, dtype)


def check_request(docs: DocumentArray, endpoint: str):
    """The request limits: Documents, and images or texts to embed (a Document's own and its matches')."""
    limits = request_limits()
    limits.check_docs(docs, endpoint)
    limits.check_images(sum(1 + len(doc.matches) for doc in docs), f"{len(docs)} Documents and their matches")


def embed(clip: ClipEmbedder, docs: DocumentArray, what: str = "docs", image_first: bool = False):
    """Set `.embedding` on every Document: its text when it has one, else its image, as CLIP-as-service; with
    `image_first`, its image when it has one (the Flow's candidates carry their prompt as text too)."""
    for i, doc in enumerate(docs):
        request_limits().check_prompt(doc.text, f"{what}[{i}].text")
    inputs = [clip_input(doc, f"{what}[{i}]", image_first) for i, doc in enumerate(docs)]
    images = [(doc, x) for doc, x in zip(docs, inputs) if not isinstance(x, str)]
    texts = [(doc, x) for doc, x in zip(docs, inputs) if isinstance(x, str)]
    for pairs, encode in ((images, clip.encode_images), (texts, clip.encode_text)):
        for (doc, _), vector in zip(pairs, encode([x for _, x in pairs])):
            doc.embedding = vector


def rank_matches(clip: ClipEmbedder, doc, index: int, candidates_image_first: bool = False):
    """Reorder doc.matches best first against the query `doc.embedding` (set by the caller); scores as
    CLIP-as-service: softmax of scaled cosine, and the cosine. Matches come back without embeddings, as from
    clip_server."""
    if not len(doc.matches):
        return
    embed(clip, doc.matches, what=f"docs[{index}].matches", image_first=candidates_image_first)
    clip_scores, cosines = rank_scores(np.asarray(doc.embedding), doc.matches.embeddings, clip.logit_scale)
    for match, score, cosine in zip(doc.matches, clip_scores, cosines):
        match.scores["clip_score"].value = float(score)
        match.scores["clip_score"].op_name = "softmax"
        match.scores["clip_score_cosine"].value = float(cosine)
        match.scores["clip_score_cosine"].op_name = "cosine"
        match.embedding = None
    doc.matches = sorted(doc.matches, key=lambda m: m.scores["clip_score"].value, reverse=True)


class FlowClip(FlowExecutor):
    """CLIP loaded once at start-up: `/encode`, `/rank` as CLIP-as-service; on `/` the prompt's embedding and the
    candidates of every generator ranked by their images."""

    def __init__(self, model_name: str = DEFAULT_CLIP, device: str = "auto", dtype: str = "auto",
                 preset: str | None = None, weights_dir: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.clip = clip_for(model_name, device, dtype, preset, weights_dir)

    @requests(on="/encode")
    def encode(self, docs: DocumentArray, parameters: dict = None, **kwargs):
        refuse_unsupported_parameters(parameters)
        check_request(docs, "/encode")
        embed(self.clip, docs)
        drop_image_content(docs, parameters)

    @requests(on="/rank")
    def rank(self, docs: DocumentArray, parameters: dict = None, **kwargs):
        refuse_unsupported_parameters(parameters)
        check_request(docs, "/rank")
        embed(self.clip, docs)  # the queries, always re-encoded as CLIP-as-service does
        for i, doc in enumerate(docs):
            rank_matches(self.clip, doc, i)
        drop_image_content(docs, parameters, matches=True)

    @requests(on="/")
    def rank_candidates(self, docs: DocumentArray, **kwargs):
        """The answer's `.embedding` is CLIP of the prompt (also of a Document that carries an image and its prompt
        in the `text` tag); its candidates are ranked against it by their images."""
        if is_probe(docs):
            return
        prompts = [document_prompt(doc, f"docs[{i}]") for i, doc in enumerate(docs)]
        for doc, vector in zip(docs, self.clip.encode_text(prompts)):
            doc.embedding = vector
        for i, doc in enumerate(docs):
            rank_matches(self.clip, doc, i, candidates_image_first=True)

    @requests(on=PARAMETERS_ENDPOINT)
    def merge_parameter_declarations(self, docs: DocumentArray, **kwargs):
        """No parameters of its own: bound so that Jina merges both generators' declarations here (a Flow node that
        does not bind an endpoint passes on one incoming branch and drops the other)."""
