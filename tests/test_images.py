import base64

import numpy as np
import pytest
from docarray import Document

from dalle_flow.serving import images
from tests.conftest import png_bytes, png_data_uri, test_image


def test_data_uri_blob_and_tensor_decode_to_the_same_pixels():
    image = test_image(32)
    for doc in (Document(uri=png_data_uri(image)), Document(blob=png_bytes(image)), Document(tensor=image)):
        np.testing.assert_array_equal(images.document_image(doc), image)


def test_float_tensor_in_unit_range():
    image = test_image(8)
    np.testing.assert_array_equal(images.tensor_to_image(image / 255.0), image)


@pytest.mark.parametrize("uri", ["http://example.com/cat.png", "https://example.com/cat.png", "file:///etc/passwd",
                                 "/etc/passwd", "cat.png"])
def test_remote_and_local_uris_are_refused_without_fetching(uri):
    with pytest.raises(ValueError, match="only inline images are accepted"):
        images.document_image(Document(uri=uri))


def test_undecodable_and_oversized_images_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="not a decodable image"):
        images.document_image(Document(uri="data:image/png;base64," + base64.b64encode(b"not a png").decode()))
    with pytest.raises(ValueError, match="not valid base64"):
        images.document_image(Document(uri="data:image/png;base64,@@@"))
    monkeypatch.setattr(images, "MAX_IMAGE_SIDE", 16)
    with pytest.raises(ValueError, match="between 1 and 16 pixels on each side, got 32×32"):
        images.document_image(Document(uri=png_data_uri(test_image(32))))
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 100)
    with pytest.raises(ValueError, match="larger than the limit"):
        images.decode_image_bytes(png_bytes(test_image(8)))


def test_missing_image_is_a_clear_error():
    with pytest.raises(ValueError, match="carries no image"):
        images.document_image(Document(text="only text"))
    with pytest.raises(ValueError, match="must be H×W×3"):
        images.tensor_to_image(np.zeros((4, 4)))


def test_png_round_trip():
    image = test_image(16)
    uri = images.image_to_data_uri(image)
    np.testing.assert_array_equal(images.decode_image_bytes(images.data_uri_bytes(uri)), image)


def test_data_uris_in_both_encodings_and_with_parameters_decode_to_the_same_pixels():
    from urllib.parse import quote_from_bytes

    image = test_image(16, seed=4)
    data = png_bytes(image)
    b64 = base64.b64encode(data).decode()
    wrapped = base64.encodebytes(data).decode()  # RFC 2045 line breaks
    for uri in (f"data:image/png;base64,{b64}",
                f"data:image/png;charset=utf-8;base64,{b64}",
                f"data:image/png;name=cat.png;BASE64,{wrapped}",
                f"data:image/png;charset=utf-8,{quote_from_bytes(data)}",  # DocArray's default (base64=False)
                "data:," + quote_from_bytes(data),
                Document(blob=data, mime_type="image/png").convert_blob_to_datauri().uri):
        assert images.data_uri_bytes(uri) == data
        np.testing.assert_array_equal(images.document_image(Document(uri=uri)), image)


def test_size_limit_applies_to_decoded_bytes(monkeypatch):
    from urllib.parse import quote_from_bytes

    data = png_bytes(test_image(8))
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", len(data))
    assert images.data_uri_bytes("data:image/png," + quote_from_bytes(data)) == data  # 3× longer as text, still fits
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", len(data) - 1)
    for uri in ("data:image/png," + quote_from_bytes(data), "data:image/png;base64," + base64.b64encode(data).decode()):
        with pytest.raises(ValueError, match="larger than the limit"):
            images.data_uri_bytes(uri)
    with pytest.raises(ValueError, match="needs a ','"):
        images.data_uri_bytes("data:image/png;base64")


def test_tensor_and_blob_win_over_the_uri_they_were_loaded_from():
    image = test_image(8, seed=1)
    blob_doc = Document(uri="https://example.com/cat.png", blob=png_bytes(image))
    tensor_doc = Document(uri="cat.png", tensor=image)
    assert images.image_field(blob_doc) == "blob" and images.image_field(tensor_doc) == "tensor"
    for doc in (blob_doc, tensor_doc):
        np.testing.assert_array_equal(images.document_image(doc), image)
    assert images.image_field(Document(text="no image")) is None


def test_uint8_pixels_that_arrive_as_numbers_keep_their_values():
    """HTTP's JSON carries a uint8 tensor as plain numbers: whole numbers in 0–255 are read as pixels."""
    image = test_image(8, seed=2)
    np.testing.assert_array_equal(images.tensor_to_image(image.astype(np.float64)), image)
    np.testing.assert_array_equal(images.tensor_to_image(image.tolist()), image)
    with pytest.raises(ValueError, match=r"float pixels must be in \[0, 1\] \(or whole numbers in 0–255\)"):
        images.tensor_to_image(image.astype(np.float64) + 0.5)
    with pytest.raises(ValueError, match="pixels must be finite"):
        images.tensor_to_image(np.full((2, 2, 3), np.nan))
