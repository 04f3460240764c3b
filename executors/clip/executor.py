"""CLIP in the Flow: `clip_encoder` (CLIP-as-service /encode and /rank; prompt embedding on /) and `rerank`
(ranks every candidate of a prompt on /)."""

import numpy as np
from docarray import DocumentArray
from jina import Executor, requests

from dalle_flow.serving.images import document_image, has_image
from dalle_flow.serving.parameters import PARAMETERS_ENDPOINT, require_prompts
from dalle_flow.serving.presets import is_tiny
from dalle_flow.serving.weights import resolve_hf_model
from dalle_flow.runtime.device import resolve_device
from dalle_flow.models.clip import DEFAULT_CLIP, ClipEmbedder, load_clip, rank_scores, tiny_clip


def clip_for(model_name: str, device: str, dtype: str, preset: str | None, weights_dir: str | None) -> ClipEmbedder:
    device, dtype = resolve_device(device, dtype)
    if is_tiny(preset):
        return tiny_clip(device)  # float32 whatever the device: it is tiny
    return load_clip(resolve_hf_model("clip", model_name, weights_dir), device, dtype)


def embed(clip: ClipEmbedder, docs: DocumentArray, what: str = "docs"):
    """Set `.embedding` on every Document: its image when it carries one, else its text (as CLIP-as-service)."""
    images, image_docs, texts, text_docs = [], [], [], []
    for i, doc in enumerate(docs):
        if has_image(doc):
            images.append(document_image(doc, what=f"{what}[{i}]"))
            image_docs.append(doc)
        elif doc.text:
            texts.append(doc.text)
            text_docs.append(doc)
        else:
            raise ValueError(f"{what}[{i}]: carries neither text nor an image to encode")
    for targets, vectors in ((image_docs, clip.encode_images(images)), (text_docs, clip.encode_text(texts))):
        for doc, vector in zip(targets, vectors):
            doc.embedding = vector


def rank_matches(clip: ClipEmbedder, doc, index: int):
    """Reorder doc.matches best first; scores as CLIP-as-service: softmax of scaled cosine, and the cosine.

    The query is the Document's own embedding when it has one from this CLIP (the prompt is embedded once on `/`),
    else its freshly computed embedding."""
    if doc.embedding is None or np.asarray(doc.embedding).shape != (clip.embedding_dim,):
        embed(clip, DocumentArray([doc]), what=f"docs[{index}]")
    if not len(doc.matches):
        return
    embed(clip, doc.matches, what=f"docs[{index}].matches")
    clip_scores, cosines = rank_scores(np.asarray(doc.embedding), doc.matches.embeddings, clip.logit_scale)
    for match, score, cosine in zip(doc.matches, clip_scores, cosines):
        match.scores["clip_score"].value = float(score)
        match.scores["clip_score"].op_name = "softmax"
        match.scores["clip_score_cosine"].value = float(cosine)
        match.scores["clip_score_cosine"].op_name = "cosine"
    doc.matches = sorted(doc.matches, key=lambda m: m.scores["clip_score"].value, reverse=True)


class _ClipExecutor(Executor):
    """Loads CLIP once at start-up; subclasses bind endpoints (no handlers here, so none are inherited twice)."""

    def __init__(self, model_name: str = DEFAULT_CLIP, device: str = "auto", dtype: str = "auto",
                 preset: str | None = None, weights_dir: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.clip = clip_for(model_name, device, dtype, preset, weights_dir)


class ClipEncoder(_ClipExecutor):
    """CLIP-as-service protocol (`/encode`, `/rank`) plus the prompt embedding on `/` that GLID-3 XL consumes."""

    @requests(on="/encode")
    def encode(self, docs: DocumentArray, **kwargs):
        embed(self.clip, docs)

    @requests(on="/rank")
    def rank(self, docs: DocumentArray, **kwargs):
        for i, doc in enumerate(docs):
            doc.embedding = None  # as CLIP-as-service: the query is always re-encoded
            rank_matches(self.clip, doc, i)

    @requests(on="/")
    def encode_prompt(self, docs: DocumentArray, **kwargs):
        require_prompts(docs)
        embed(self.clip, docs)


class ClipReranker(_ClipExecutor):
    """Ranks every candidate a prompt received on `/` (from all generators), best first; matches keep no embedding."""

    @requests(on="/")
    def rank_candidates(self, docs: DocumentArray, **kwargs):
        for i, doc in enumerate(docs):
            rank_matches(self.clip, doc, i)
            for match in doc.matches:
                match.embedding = None

    @requests(on=PARAMETERS_ENDPOINT)
    def merge_parameter_declarations(self, docs: DocumentArray, **kwargs):
        """No parameters of its own: bound so that Jina merges both generators' declarations here (a Flow node that
        does not bind an endpoint passes on one incoming branch and drops the other)."""
