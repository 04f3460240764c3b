"""Image input/output shared by every executor: inline data only, never a fetch.

A request image may arrive as a ``data:`` URI (RFC 2397: base64 or percent-encoded, as DocArray's
``convert_uri_to_datauri()``/``convert_blob_to_datauri()`` write by default, with any media-type parameters), as
``.blob`` bytes (an encoded PNG/JPEG/WebP) or as ``.tensor`` (H×W×3 or H×W×4, uint8 or float in [0, 1]); `.tensor`
and `.blob` win over `.uri` when a Document carries several. Any other URI (http, https, file, a path) is refused:
the server never fetches what a client names. Size limits apply to the decoded image bytes. Outputs are PNG data URIs.
"""
from __future__ import annotations

import base64
import binascii
import io
import re
from urllib.parse import unquote_to_bytes

import numpy as np
from PIL import Image

MAX_IMAGE_BYTES = 16 * 1024 * 1024  # one inline image file (PNG/JPEG/... bytes, after any data-URI decoding)
MAX_IMAGE_SIDE = 4096  # pixels, each side; also guards against decompression bombs
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")


def image_to_data_uri(image: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(image)).decode("ascii")


def encode_png(image: np.ndarray) -> bytes:
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {array.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri_bytes(uri: str, field: str = "uri") -> bytes:
    """The payload of a ``data:`` URI, base64 or percent-encoded (RFC 2397); anything else is refused."""
    if not isinstance(uri, str) or not uri.startswith("data:"):
        scheme = uri.split(":", 1)[0] if isinstance(uri, str) and ":" in uri else "a path"
        raise ValueError(f"{field}: only inline images are accepted (a data: URI, .blob bytes or .tensor); "
                         f"got {scheme!r} — the server never fetches a URI")
    header, comma, payload = uri[len("data:"):].partition(",")
    if not comma:
        raise ValueError(f"{field}: a data URI needs a ',' before its payload (data:image/png;base64,...)")
    is_base64 = header.rsplit(";", 1)[-1].strip().lower() == "base64"
    # the longest text that can still decode to MAX_IMAGE_BYTES: refused before decoding anything larger
    if len(payload) > (MAX_IMAGE_BYTES * 4 // 3 + 4 if is_base64 else MAX_IMAGE_BYTES * 3):
        raise ValueError(_too_large(field))
    if is_base64:
        try:
            # base64 may itself be percent-escaped or wrapped (RFC 2045 line breaks) in a URI
            text = unquote_to_bytes(payload) if "%" in payload else payload.encode("ascii")
            data = base64.b64decode(re.sub(rb"\s+", b"", text), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{field}: data URI payload is not valid base64") from None
    else:
        data = unquote_to_bytes(payload)
    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(_too_large(field))
    return data


def _too_large(field: str) -> str:
    return f"{field}: image is larger than the limit of {MAX_IMAGE_BYTES // (1024 * 1024)} MiB"


def decode_image_bytes(data: bytes, field: str = "blob") -> np.ndarray:
    """Encoded bytes -> uint8 RGB H×W×3, refusing oversized or undecodable input."""
    return _checked_decode(data, field, lambda img: np.asarray(img.convert("RGB"), dtype=np.uint8).copy())


def image_mime_type(data: bytes, field: str = "blob") -> str:
    """The real mime type of encoded image bytes (read from the data, not from what a client says), after the same
    checks as `decode_image_bytes`: size, format, sides, and a full decode."""
    def mime(img) -> str:
        img.load()
        return Image.MIME[img.format]

    return _checked_decode(data, field, mime)


def _checked_decode(data: bytes, field: str, use):
    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(_too_large(field))
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format not in ALLOWED_FORMATS:
                raise ValueError(f"{field}: image format {img.format} is not accepted; use one of {ALLOWED_FORMATS}")
            _check_size(img.width, img.height, field)
            return use(img)
    except ValueError:
        raise
    except Exception as exc:  # PIL raises many types for corrupt data; all mean the same to the client
        raise ValueError(f"{field}: not a decodable image ({type(exc).__name__})") from None


def tensor_to_image(tensor, field: str = "tensor") -> np.ndarray:
    array = np.asarray(tensor)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"{field}: must be H×W×3 (or ×4) pixels, got shape {array.shape}")
    _check_size(array.shape[1], array.shape[0], field)
    if array.dtype != np.uint8:
        array = array.astype(np.float64)
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{field}: pixels must be finite")
        if _is_uint8_pixels(array):
            pass  # 0–255 pixels that lost their dtype on the way (HTTP's JSON turns a uint8 tensor into numbers)
        elif array.min() < 0 or array.max() > 1:
            raise ValueError(f"{field}: float pixels must be in [0, 1] (or whole numbers in 0–255)")
        else:
            array = np.round(array * 255)
    return np.ascontiguousarray(array[:, :, :3].astype(np.uint8))


def _is_uint8_pixels(array: np.ndarray) -> bool:
    """Whole numbers in 0–255 above 1 somewhere: uint8 pixels, since a [0, 1] image cannot have them."""
    return array.max() > 1 and array.min() >= 0 and array.max() <= 255 and bool(np.all(array == np.round(array)))


def _check_size(width: int, height: int, field: str):
    if width < 1 or height < 1 or width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
        raise ValueError(f"{field}: image must be between 1 and {MAX_IMAGE_SIDE} pixels on each side, "
                         f"got {width}×{height}")


def image_field(doc) -> str | None:
    """Which field holds a Document's image: `tensor`, then `blob`, then `uri` (DocArray keeps `.uri` beside the
    content it was loaded into, e.g. a file name next to `.blob`); None when it carries none."""
    if doc.tensor is not None and getattr(doc.tensor, "size", 0):
        return "tensor"
    if doc.blob:
        return "blob"
    return "uri" if doc.uri else None


def document_image(doc, what: str = "image") -> np.ndarray:
    """The inline image a Document carries (tensor, blob or data URI) as uint8 RGB; a clear error otherwise."""
    field = image_field(doc)
    if field == "tensor":
        return tensor_to_image(doc.tensor)
    if field == "blob":
        return decode_image_bytes(bytes(doc.blob))
    if field == "uri":
        return decode_image_bytes(data_uri_bytes(doc.uri), field="uri")
    raise ValueError(f"{what}: the Document carries no image; send it inline as a data: URI, .blob or .tensor")


def has_image(doc) -> bool:
    return image_field(doc) is not None
