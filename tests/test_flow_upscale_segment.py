"""End to end through the Flow (tiny preset): /upscale (SwinIR, then the store) and /segment (CLIPSeg)."""
from __future__ import annotations

import base64

import numpy as np
import pytest
from docarray import Document
from jina import Client

from tests.conftest import decode_data_uri, error_text, png_data_uri, test_image

pytestmark = pytest.mark.flow


def uri_bytes(uri: str) -> bytes:
    return base64.b64decode(uri.split(",", 1)[1])


def post(flow, endpoint, doc, parameters=None) -> Document:
    return doc.post(flow.url("grpc") + endpoint, parameters=parameters or {})


# ---------------------------------------------------------------- /upscale

def test_upscale_256_to_1024_tagged_and_stored_byte_identical(tiny_flow):
    image = test_image(256, seed=11)
    doc = Document(uri=png_data_uri(image), text="an armchair shaped like an avocado",
                   tags={"generator": "dalle-mega", "seed": 1234, "text": "an armchair shaped like an avocado"})
    result = post(tiny_flow, "/upscale", doc)
    out = decode_data_uri(result.uri)
    assert out.shape == (1024, 1024, 3) and out.dtype == np.uint8
    assert out.std() > 0  # an image, not a blank canvas
    assert result.tags["upscaled"] is True
    assert result.tags["upscaler"] == "SwinIR tiny x4 (random weights)" and result.tags["preset"] == "tiny"
    assert (result.tags["width"], result.tags["height"]) == (1024, 1024)
    assert result.tags["generator"] == "dalle-mega" and result.tags["seed"] == 1234  # the candidate's tags stay
    assert result.tags["text"] == doc.text and result.text == doc.text
    assert not result.blob and result.tensor is None

    history = Client(host=tiny_flow.url("grpc")).post("/history", parameters={"limit": 1})
    assert len(history) == 1 and history[0].id == result.tags["stored_id"] != result.id  # the store's own id
    assert uri_bytes(history[0].uri) == uri_bytes(result.uri)  # the very PNG the client received
    assert history[0].tags["upscaled"] is True and history[0].tags["seed"] == 1234

    again = post(tiny_flow, "/upscale", result)  # already upscaled: left as it is, not upscaled to 4096
    assert again.uri == result.uri


def test_matches_of_a_prompt_document_are_upscaled_and_stored(tiny_flow):
    candidates = [test_image(32, seed=s) for s in range(2)]
    done_before = png_data_uri(test_image(48, seed=9))
    doc = Document(text="a prompt", matches=[
        *[Document(uri=png_data_uri(c), tags={"generator": "glid3", "seed": s}) for s, c in enumerate(candidates)],
        Document(uri=done_before, tags={"upscaled": True, "generator": "earlier"})])
    result = post(tiny_flow, "/upscale", doc)
    assert not result.uri  # the prompt Document itself carries no image and gets none
    for s, match in enumerate(result.matches[:2]):
        assert decode_data_uri(match.uri).shape == (128, 128, 3)
        assert match.tags["upscaled"] is True and match.tags["seed"] == s and match.tags["generator"] == "glid3"
    assert result.matches[2].uri == done_before  # tagged upscaled already: untouched
    history = Client(host=tiny_flow.url("grpc")).post("/history", parameters={"limit": 3})
    stored = {d.id: d.uri for d in history}
    for match in result.matches:
        assert uri_bytes(stored[match.tags["stored_id"]]) == uri_bytes(match.uri)


def test_tiled_upscale_through_the_flow(tiny_flow):
    image = test_image(40, seed=3)
    whole = post(tiny_flow, "/upscale", Document(uri=png_data_uri(image)))
    tiled = post(tiny_flow, "/upscale", Document(uri=png_data_uri(image)), {"tile": 16, "tile_overlap": 8})
    assert decode_data_uri(tiled.uri).shape == (160, 160, 3)
    assert (tiled.tags["tile"], tiled.tags["tile_overlap"]) == (16, 8) and "tile" not in whole.tags
    assert not np.array_equal(decode_data_uri(tiled.uri), decode_data_uri(whole.uri))  # tiles see less context


# ---------------------------------------------------------------- /segment

def segment(flow, image, parameters=None, text="the cat") -> tuple[np.ndarray, Document]:
    result = post(flow, "/segment", Document(uri=png_data_uri(image), text=text), parameters)
    return decode_data_uri(result.uri), result


def test_segment_returns_rgba_whose_alpha_follows_the_threshold(tiny_flow):
    image = test_image(72, seed=5)[:60]  # not square: the mask must come back at the input's own size
    binary, result = segment(tiny_flow, image)
    assert binary.shape == (60, 72, 4)
    np.testing.assert_array_equal(binary[..., :3], image)
    assert result.tags["segmented"] is True and result.tags["thresholding_type"] == "binary"
    assert result.tags["binary_thresh_strength"] == 85 and result.text == "the cat"
    alpha = binary[..., 3]
    assert set(np.unique(alpha)) == {0, 255}  # a hard mask with both sides present
    (mask,) = [c for c in result.chunks if c.tags["kind"] == "alpha_mask"]
    np.testing.assert_array_equal(decode_data_uri(mask.uri), alpha)
    assert mask.tags["prompt_region"] == "transparent"

    soft, soft_doc = segment(tiny_flow, image, {"thresholding_type": "none"})
    assert len(np.unique(soft[..., 3])) > 2 and "binary_thresh_strength" not in soft_doc.tags
    # binary keeps, as opaque, exactly the pixels whose (un-inverted) grey level is at most the strength
    np.testing.assert_array_equal(alpha == 255, (255 - soft[..., 3]) <= 85)

    inverted, inverted_doc = segment(tiny_flow, image, {"invert": True})
    np.testing.assert_array_equal(inverted[..., 3], 255 - alpha)
    assert inverted_doc.chunks[0].tags["prompt_region"] == "opaque"

    stricter, _ = segment(tiny_flow, image, {"binary_thresh_strength": 200})
    assert (stricter[..., 3] == 255).sum() > (alpha == 255).sum()  # a higher threshold selects less of the prompt

    adaptive, adaptive_doc = segment(tiny_flow, image, {"thresholding_type": "adaptive_mean",
                                                        "adaptive_thresh_block_size": 7, "adaptive_thresh_c": 1.5})
    assert set(np.unique(adaptive[..., 3])) <= {0, 255}
    assert adaptive_doc.tags["adaptive_thresh_block_size"] == 7 and adaptive_doc.tags["adaptive_thresh_c"] == 1.5


def test_segmenting_again_replaces_the_mask(tiny_flow):
    _, first = segment(tiny_flow, test_image(32, seed=1))
    second = post(tiny_flow, "/segment", first, {"thresholding_type": "none"})
    assert [c.tags["kind"] for c in second.chunks] == ["alpha_mask"]
    assert second.chunks[0].tags["thresholding_type"] == "none"
    np.testing.assert_array_equal(decode_data_uri(second.uri)[..., :3], test_image(32, seed=1))


# ---------------------------------------------------------------- bad inputs

SMALL = png_data_uri(test_image(16, seed=2))


@pytest.mark.parametrize("endpoint, doc, parameters, message", [
    ("/upscale", Document(text="no image"), {}, "docs[0]: carries no image to upscale"),
    ("/upscale", Document(uri="https://example.com/cat.png"), {}, "docs[0].uri: only inline images are accepted"),
    ("/upscale", Document(text="p", matches=[Document(uri="file:///etc/passwd")]), {},
     "docs[0].matches[0].uri: only inline images are accepted"),
    ("/upscale", Document(uri=SMALL), {"tile": "big"}, "tile: must be an integer between 8 and 1024, got 'big'"),
    ("/upscale", Document(uri=SMALL), {"tile": 12}, "tile: must be a multiple of the window size 8"),
    ("/upscale", Document(uri=SMALL), {"tile": 16, "tile_overlap": 16}, "tile_overlap: must be smaller than tile"),
    ("/upscale", Document(uri=SMALL), {"tile_overlap": 2.5}, "tile_overlap: must be an integer >= 0, got 2.5"),
    ("/upscale", Document(uri=png_data_uri(np.zeros((8, 1040, 3), np.uint8))), {},
     "docs[0]: image must be at most 1024 pixels on each side to upscale x4 (to 4096), got 1040×8"),
    ("/segment", Document(uri=SMALL), {}, "docs[0].text: say what to segment"),
    ("/segment", Document(text="the cat"), {}, "docs[0]: the Document carries no image"),
    ("/segment", Document(uri="http://example.com/a.png", text="the cat"), {}, "only inline images are accepted"),
    ("/segment", Document(uri="data:image/png;base64,AAAA", text="the cat"), {}, "not a decodable image"),
    ("/segment", Document(uri=SMALL, text="the cat"), {"thresholding_type": "otsu"},
     "thresholding_type: must be one of 'none', 'binary', 'adaptive_mean', 'adaptive_gaussian', got 'otsu'"),
    ("/segment", Document(uri=SMALL, text="the cat"), {"binary_thresh_strength": 300},
     "binary_thresh_strength: must be an integer between 0 and 255, got 300"),
    ("/segment", Document(uri=SMALL, text="the cat"), {"adaptive_thresh_block_size": 2.5},
     "adaptive_thresh_block_size: must be an integer between 3 and 255"),
    ("/segment", Document(uri=SMALL, text="the cat"), {"adaptive_thresh_c": "two"},
     "adaptive_thresh_c: must be a number between -255 and 255, got 'two'"),
    ("/segment", Document(uri=SMALL, text="the cat"), {"invert": "yes"}, "invert: must be true or false, got 'yes'"),
])
def test_bad_inputs_get_clear_errors_and_flow_keeps_serving(tiny_flow, endpoint, doc, parameters, message):
    with pytest.raises(Exception) as err:
        post(tiny_flow, endpoint, doc, parameters)
    assert message in error_text(err.value)
    # the same executor still answers a good request
    good = post(tiny_flow, endpoint, Document(uri=SMALL, text="the cat"))
    assert decode_data_uri(good.uri).shape == ((64, 64, 3) if endpoint == "/upscale" else (16, 16, 4))
