"""`store`: persists every finished image (on /upscale) and serves them back on /history, newest first.

Nothing a client sends decides what is stored or under which id: every image the /upscale response carries (the
Document's and its matches', as the upscaler returned them) is checked as an image and stored as a new row with an id
drawn by the store; the mime type is read from the bytes. `stored` and `stored_id` are set on a Document only once
its row is durable. `namespace` (optional, on both endpoints) keeps a client's history apart from the shared one.
"""

import base64
import json
import os

from docarray import Document, DocumentArray
from jina import requests

from dalle_flow.serving.executor import FlowExecutor
from dalle_flow.serving.parameters import PARAMETERS_ENDPOINT, declare_parameters
from dalle_flow.parameters import Param, Params
from dalle_flow.serving.images import (data_uri_bytes, encode_png, has_image, image_field, image_mime_type,
                                       tensor_to_image)
from dalle_flow.serving.limits import request_limits
from dalle_flow.store import ImageStore, StoredImage

NAMESPACE_PARAMS = Params((Param("namespace", "str", default="", max_length=64),))
NAMESPACE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
HISTORY_PARAMS = Params((Param("offset", "int", default=0, low=0, high=10**9),
                         Param("limit", "int", default=20, low=1, high=100)))
MAX_TAGS_BYTES = 16 * 1024  # JSON of one stored image's tags: the generator's settings, not a payload
SERVER_TAGS = ("stored", "stored_id", "stored_time", "namespace")  # written by the store, never taken from a client


def _namespace(parameters) -> str:
    namespace = NAMESPACE_PARAMS.parse(parameters)["namespace"]
    if not set(namespace) <= NAMESPACE_CHARS:
        raise ValueError(f"namespace: must be at most 64 letters, digits, '_', '-' or '.', got {namespace[:64]!r}")
    return namespace


def _image_bytes(doc, field: str) -> tuple[bytes, str]:
    """The image's encoded bytes as served (a data URI stays byte-identical) and their real mime type; a tensor
    becomes PNG. The same field wins as everywhere else (serving.images.image_field). Anything that is not an image
    within the size limits is refused before a row is written."""
    source = image_field(doc)
    if source == "uri":
        data = data_uri_bytes(doc.uri, field=f"{field}.uri")
        return data, image_mime_type(data, field=f"{field}.uri")
    if source == "blob":
        data = bytes(doc.blob)
        return data, image_mime_type(data, field=f"{field}.blob")
    return encode_png(tensor_to_image(doc.tensor, field=f"{field}.tensor")), "image/png"


def _stored_tags(doc, field: str) -> dict:
    tags = {k: v for k, v in doc.tags.items() if k not in SERVER_TAGS}
    size = len(json.dumps(tags, sort_keys=True, default=str))
    if size > MAX_TAGS_BYTES:
        raise ValueError(f"{field}.tags: at most {MAX_TAGS_BYTES // 1024} KiB of tags are stored with an image, "
                         f"got {size} bytes")
    return tags


class ImageStoreExecutor(FlowExecutor):
    def __init__(self, db_name: str = "images.sqlite", **kwargs):
        super().__init__(**kwargs)
        root = self.workspace or os.environ.get("DALLE_FLOW_WORKSPACE", "workspace")
        self.store = ImageStore(os.path.join(root, db_name))  # runs quick_check: a damaged database stops the start

    @requests(on=PARAMETERS_ENDPOINT)
    def parameters(self, docs: DocumentArray, **kwargs):
        declare_parameters(docs, self.metas.name, {"/history": HISTORY_PARAMS})

    @requests(on="/upscale")
    def persist(self, docs: DocumentArray, parameters: dict = None, **kwargs):
        namespace = _namespace(parameters)
        limits = request_limits()
        limits.check_docs(docs, "/upscale")
        targets = []
        for i, doc in enumerate(docs):
            targets += [(doc, f"docs[{i}]")] if has_image(doc) else []
            targets += [(m, f"docs[{i}].matches[{j}]") for j, m in enumerate(doc.matches) if has_image(m)]
        limits.check_images(len(targets), f"images to store in {len(docs)} Documents")
        items = []
        for target, field in targets:  # every image is checked before any row is written
            data, mime_type = _image_bytes(target, field)
            text = target.text or str(target.tags.get("text", ""))
            limits.check_prompt(text, f"{field}.text")
            items.append(StoredImage(text, mime_type, _stored_tags(target, field), data, namespace))
        rows = self.store.add(items)  # raises with SQLite's message when the write did not happen
        for (target, _), row in zip(targets, rows):
            target.tags.update(stored=True, stored_id=row.id)

    @requests(on="/history")
    def history(self, parameters: dict, **kwargs):
        page = HISTORY_PARAMS.parse(parameters)
        namespace = _namespace(parameters)
        out = DocumentArray()
        max_bytes = request_limits().max_history_mib * 1024 * 1024 * 3 // 4  # base64 grows the bytes by 4/3
        for item in self.store.history(page["offset"], page["limit"], namespace, max_bytes=max_bytes):
            uri = f"data:{item.mime_type};base64," + base64.b64encode(item.image).decode("ascii")
            out.append(Document(id=item.id, text=item.text, uri=uri, mime_type=item.mime_type,
                                tags={**item.tags, "stored_id": item.id, "stored_time": item.stored_time}))
        return out

    def close(self):
        self.store.close()
        super().close()
