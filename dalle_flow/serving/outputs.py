"""Documents the executors return: generated images as PNG data URIs with the shared tags (docs/documents.md)."""
from __future__ import annotations

import time

import numpy as np
from docarray import Document

from dalle_flow.serving.images import image_to_data_uri
from dalle_flow.serving.presets import preset_tags


def image_document(image: np.ndarray, generator: str, text: str, seed: int, request_time: float,
                   preset: str | None = None, **params) -> Document:
    """One generated image: `.uri` is a PNG data URI (no blob, no embedding), `.text` its prompt (as the original set
    it: clients read `match.text`), tags say how to reproduce it (`text` among them)."""
    tags = {"generator": generator, "text": text, "seed": int(seed), "request_time": float(request_time),
            "created_time": time.time(), **params, **preset_tags(preset)}
    return Document(uri=image_to_data_uri(image), mime_type="image/png", text=text, tags=tags)


def request_timer() -> float:
    """Wall-clock start of a request, reported in every output's `request_time` tag (seconds since the epoch)."""
    return time.time()
