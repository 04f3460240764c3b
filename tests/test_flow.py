"""End to end through the Flow (tiny preset): every protocol, jina.Client, curl, clip_client, bad inputs, store."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from docarray import Document, DocumentArray
from jina import Client

from tests.conftest import decode_data_uri, error_text, png_data_uri, test_image

pytestmark = pytest.mark.flow


@pytest.mark.parametrize("protocol", ["grpc", "http", "websocket"])
def test_prompt_gets_clip_embedding_over_every_protocol(tiny_flow, protocol):
    result = Document(text="a raccoon astronaut").post(tiny_flow.url(protocol))
    assert result.embedding is not None and np.asarray(result.embedding).shape == (32,)
    assert np.all(np.isfinite(result.embedding))


def test_jina_client_and_unhandled_endpoint_passes_through(tiny_flow):
    client = Client(host=tiny_flow.url("grpc"))
    docs = client.post("/no-such-endpoint", inputs=DocumentArray([Document(text="unchanged", tags={"k": "v"})]))
    assert docs[0].text == "unchanged" and docs[0].tags["k"] == "v" and docs[0].embedding is None


def test_rank_orders_matches_like_clip_as_service(tiny_flow):
    doc = Document(text="a red square", matches=[Document(uri=png_data_uri(test_image(48, seed=s))) for s in range(4)])
    ranked = doc.post(tiny_flow.url("grpc") + "/rank")
    scores = [m.scores["clip_score"].value for m in ranked.matches]
    assert scores == sorted(scores, reverse=True)
    assert abs(sum(scores) - 1) < 1e-5
    cosines = [m.scores["clip_score_cosine"].value for m in ranked.matches]
    assert cosines == sorted(cosines, reverse=True) and all(-1 <= c <= 1 for c in cosines)


def test_clip_client_encode_and_rank(tiny_flow):
    from clip_client import Client as ClipClient

    client = ClipClient(tiny_flow.url("grpc"))
    text_embeddings = client.encode(["a cat", "a dog"])
    assert text_embeddings.shape == (2, 32)
    image_embeddings = client.encode(DocumentArray([Document(uri=png_data_uri(test_image(32)))]))
    assert image_embeddings.embeddings.shape == (1, 32)
    ranked = client.rank([Document(text="a cat", matches=[Document(text="a dog"), Document(text="a cat")])])
    assert ranked[0].matches[0].text == "a cat"  # identical text has cosine 1 and ranks first
    assert ranked[0].matches[0].scores["clip_score_cosine"].value == pytest.approx(1.0, abs=1e-5)


def test_curl_against_http_gateway(tiny_flow):
    body = json.dumps({"data": [{"text": "a hamster drinking tea"}], "execEndpoint": "/"})
    out = subprocess.run(["curl", "-s", "-X", "POST", f"{tiny_flow.url('http')}/post",
                          "-H", "Content-Type: application/json", "-d", body],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    reply = json.loads(out)
    assert reply["header"]["status"] is None or reply["header"]["status"].get("code") in (None, 0, "SUCCESS")
    assert len(reply["data"][0]["embedding"]) == 32


@pytest.mark.parametrize("endpoint, doc, parameters, message", [
    ("/encode", Document(uri="https://example.com/cat.png"), {}, "only inline images are accepted"),
    ("/encode", Document(), {}, "carries neither text nor an image"),
    ("/", Document(text="   "), {}, "the prompt is empty"),  # an empty Document() is a profiler's probe
    ("/history", Document(), {"limit": "many"}, "limit: must be an integer between 1 and 100, got 'many'"),
    ("/upscale", Document(uri="data:image/png;base64,AAAA"), {}, "not a decodable image"),
])
def test_bad_inputs_get_clear_errors_and_flow_keeps_serving(tiny_flow, endpoint, doc, parameters, message):
    with pytest.raises(Exception) as err:
        doc.post(tiny_flow.url("grpc") + endpoint, parameters=parameters)
    assert message in error_text(err.value)
    still = Document(text="still serving").post(tiny_flow.url("grpc"), parameters={"num_images": 1})
    assert still.embedding is not None and len(still.matches) == 2  # one candidate of each generator


def test_bad_input_over_http_reports_the_message(tiny_flow):
    body = json.dumps({"data": [{"uri": "file:///etc/passwd"}], "execEndpoint": "/encode"})
    out = subprocess.run(["curl", "-s", "-X", "POST", f"{tiny_flow.url('http')}/post",
                          "-H", "Content-Type: application/json", "-d", body],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "only inline images are accepted" in out


def test_upscale_path_is_stored_and_read_back_from_history(tiny_flow):
    image = test_image(40, seed=7)
    uri = png_data_uri(image)
    served = Document(uri=uri, text="stored prompt", tags={"generator": "test"}).post(
        tiny_flow.url("grpc") + "/upscale")
    history = Client(host=tiny_flow.url("grpc")).post("/history", parameters={"limit": 1})
    assert len(history) == 1
    assert history[0].tags["generator"] == "test"
    # what is stored is what /upscale served: the x4 image from the upscaler, not the input
    assert decode_data_uri(history[0].uri).shape == (160, 160, 3)
    np.testing.assert_array_equal(decode_data_uri(history[0].uri), decode_data_uri(served.uri))
