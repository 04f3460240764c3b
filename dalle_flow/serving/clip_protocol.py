"""CLIP-as-service's rules as this server follows them, shared by local CLIP and the CLIP-as-service forwarders.

- What CLIP embeds of a Document (clip_server's `split_img_txt_da`): its `.text` when it has one, else its image,
  whose non-inline `.uri` is then never looked at. Only the Flow's own ranking of candidates on `/` embeds the image
  first: each candidate carries its prompt as `.text` too.
- `drop_image_content` (clip_client sends true by default): `/encode` and `/rank` answer without the images' `.blob`
  and `.tensor`, as clip_server does; `/rank` answers matches without embeddings.
- `model_name` (a multi-model clip_server's choice) and `access_paths`/`traversal_paths` (which nested Documents to
  embed) are refused with a clear error: this server serves one CLIP and embeds the posted Documents themselves. The
  gateway refuses the endpoints clip_client puts a model name in (dalle_flow/deploy/gateway.py).
"""
from __future__ import annotations

import numpy as np

from dalle_flow.serving.images import document_image, has_image


def clip_input(doc, what: str, image_first: bool = False) -> str | np.ndarray:
    """The text (str) or inline image (uint8 RGB array) CLIP embeds for a Document."""
    if doc.text and not (image_first and has_image(doc)):
        return doc.text
    if has_image(doc):
        return document_image(doc, what=what)
    raise ValueError(f"{what}: carries neither text nor an image to encode")


UNSUPPORTED_PARAMETERS = {
    "model_name": "it serves one CLIP model",
    "access_paths": "it embeds the posted Documents themselves",
    "traversal_paths": "it embeds the posted Documents themselves",
}


def refuse_unsupported_parameters(parameters) -> None:
    for name, why in UNSUPPORTED_PARAMETERS.items():
        if isinstance(parameters, dict) and parameters.get(name):
            raise ValueError(f"{name}: not supported by this server: {why}, so leave {name} out "
                             f"(got {parameters[name]!r})")


def drop_image_content(docs, parameters, matches: bool = False) -> None:
    """Remove `.blob` and `.tensor` from the answered Documents (and their matches: `/rank`) when the client asked
    (clip_server's default is to keep them; clip_client asks by default)."""
    if isinstance(parameters, dict) and parameters.get("drop_image_content"):
        for doc in docs:
            for answered in [doc, *(doc.matches if matches else [])]:
                answered.pop("blob", "tensor")
