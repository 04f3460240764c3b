"""CLIP-as-service ranking: cosine similarity, and a softmax over a query's candidates of the scaled cosine."""
from __future__ import annotations

import numpy as np


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return a @ b.T


def rank_scores(query: np.ndarray, candidates: np.ndarray, logit_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(clip_score, clip_score_cosine) per candidate: softmax(logit_scale * cosine) over the candidates, and cosine."""
    cosine = cosine_matrix(query[None, :], candidates)[0]
    logits = logit_scale * cosine
    weights = np.exp(logits - logits.max())
    return weights / weights.sum(), cosine
