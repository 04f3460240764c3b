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
