"""`store`: persists every finished image (on /upscale) and serves them back on /history, newest first."""

import base64
import os
import time

from docarray import Document, DocumentArray
from jina import Executor, requests

from dalle_flow.serving.images import data_uri_bytes, decode_image_bytes, encode_png, has_image, tensor_to_image
from dalle_flow.serving.parameters import PARAMETERS_ENDPOINT, declare_parameters
from dalle_flow.parameters import Param, Params
from dalle_flow.store import ImageStore, StoredImage

HISTORY_PARAMS = Params((Param("offset", "int", default=0, low=0, high=10**9),
                         Param("limit", "int", default=20, low=1, high=100)))


def _png_bytes(doc, field: str) -> bytes:
    """The image's encoded bytes as served (a PNG data URI stays byte-identical); other inputs become PNG."""
    if doc.uri:
        data = data_uri_bytes(doc.uri, field=f"{field}.uri")
        decode_image_bytes(data, field=f"{field}.uri")  # refuse what is not an image before storing it
        return data
    if doc.blob:
        return encode_png(decode_image_bytes(bytes(doc.blob), field=f"{field}.blob"))
    return encode_png(tensor_to_image(doc.tensor, field=f"{field}.tensor"))


class ImageStoreExecutor(Executor):
    def __init__(self, db_name: str = "images.sqlite", **kwargs):
        super().__init__(**kwargs)
        root = self.workspace or os.environ.get("DALLE_FLOW_WORKSPACE", "workspace")
        self.store = ImageStore(os.path.join(root, db_name))

    @requests(on=PARAMETERS_ENDPOINT)
    def parameters(self, docs: DocumentArray, **kwargs):
        declare_parameters(docs, self.metas.name, {"/history": HISTORY_PARAMS})

    @requests(on="/upscale")
    def persist(self, docs: DocumentArray, **kwargs):
        items = []
        for i, doc in enumerate(docs):
            if has_image(doc):
                items.append(self._item(doc, f"docs[{i}]"))
            items += [self._item(m, f"docs[{i}].matches[{j}]")
                      for j, m in enumerate(doc.matches) if m.tags.get("upscaled") and has_image(m)]
        self.store.add(items)
        for doc in docs:
            doc.tags["stored"] = True

    @staticmethod
    def _item(doc, field: str) -> StoredImage:
        tags = {k: v for k, v in doc.tags.items() if k != "stored"}
        return StoredImage(doc.id, time.time(), doc.text or str(tags.get("text", "")), "image/png", tags,
                           _png_bytes(doc, field))

    @requests(on="/history")
    def history(self, parameters: dict, **kwargs):
        page = HISTORY_PARAMS.parse(parameters)
        out = DocumentArray()
        for item in self.store.history(page["offset"], page["limit"]):
            uri = f"data:{item.mime_type};base64," + base64.b64encode(item.image).decode("ascii")
            out.append(Document(id=item.id, text=item.text, uri=uri, mime_type=item.mime_type,
                                tags={**item.tags, "stored_time": item.stored_time}))
        return out

    def close(self):
        self.store.close()
        super().close()
