"""Real clients of the original DALL·E Flow and of CLIP-as-service, unchanged, against the tiny Flow: the original
notebook's three steps over every protocol, images built each DocArray v1 way, `.text` on matches, the `/segment`
match, CLIP-as-service's text rule and clear refusals, clip_client on the protocols the README recommends, profilers'
empty probes, and `jina flow --uses flow.yml` answering HTTP + `target_executor`."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from docarray import Document, DocumentArray
from jina import Client

from tests.conftest import REPO_ROOT, decode_data_uri, error_text, free_ports, png_bytes, test_image

pytestmark = pytest.mark.flow

PROTOCOLS = ["grpc", "http", "websocket"]
PROMPT = "an oil painting of a humanoid robot playing chess in the style of Matisse"
IMAGE = test_image(32, seed=11)
CLIP_CLIENT_PROTOCOLS = ["grpc", "websocket"]  # README: jina 3.34's HTTP client breaks clip_client's callbacks


def image_doc(how: str, tmp_path: Path, text: str = PROMPT) -> Document:
    """The same picture as a client builds it with DocArray v1, each way; `.blob`/`.tensor` cannot sit beside a
    `.text` (one content per Document), so those carry the prompt in tags, as the server's own images do."""
    if how == "convert_uri_to_datauri":
        path = tmp_path / "fav.png"
        path.write_bytes(png_bytes(IMAGE))
        return Document(uri=str(path), text=text).convert_uri_to_datauri()  # percent-encoded (base64=False)
    if how == "convert_blob_to_datauri":
        doc = Document(blob=png_bytes(IMAGE), mime_type="image/png").convert_blob_to_datauri()
        return Document(uri=doc.uri, text=text)
    if how == "base64":
        doc = Document(blob=png_bytes(IMAGE), mime_type="image/png").convert_blob_to_datauri(base64=True)
        return Document(uri=doc.uri, text=text)
    if how == "blob":
        return Document(blob=png_bytes(IMAGE), mime_type="image/png", tags={"text": text})
    return Document(tensor=IMAGE, tags={"text": text})


DOCARRAY_WAYS = ["convert_uri_to_datauri", "convert_blob_to_datauri", "base64", "blob", "tensor"]


def test_docarray_data_uris_are_the_forms_the_server_must_read(tmp_path):
    """Guards the test's premise: DocArray's defaults write percent-encoded data URIs with a charset parameter."""
    assert image_doc("convert_uri_to_datauri", tmp_path).uri.startswith("data:image/png;charset=utf-8,%89PNG")
    assert image_doc("convert_blob_to_datauri", tmp_path).uri.startswith("data:image/png;charset=utf-8,%89PNG")
    assert image_doc("base64", tmp_path).uri.startswith("data:image/png;charset=utf-8;base64,iVBOR")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_original_three_steps(tiny_flow, protocol):
    server_url = tiny_flow.url(protocol)
    # 1. candidates, as the notebook: `.matches`, each with its prompt in `.text`
    da = Document(text=PROMPT).post(server_url, parameters={"num_images": 2, "seed": 3}).matches
    assert len(da) == 4 and all(m.text == PROMPT and m.tags["text"] == PROMPT for m in da)
    fav = da[1]
    # 2. refine, in both of the original's forms
    diffused = fav.post(f"{server_url}/diffuse", parameters={"skip_rate": 0.5, "num_images": 2}).matches
    later = fav.post(server_url, parameters={"skip_rate": 0.6, "num_images": 2}, target_executor="diffusion").matches
    for refinements, skip_rate in ((diffused, 0.5), (later, 0.6)):
        assert len(refinements) == 2
        assert all(m.text == PROMPT and m.tags["skip_rate"] == skip_rate for m in refinements)
        assert decode_data_uri(refinements[0].uri).shape == (256, 256, 3)
    # 3. upscale, plain and with target_executor (the later original's form)
    for kwargs in ({}, {"target_executor": "upscaler"}):
        fav = diffused[1].post(f"{server_url}/upscale", **kwargs)
        assert fav.tags["upscaled"] is True and decode_data_uri(fav.uri).shape == (1024, 1024, 3)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_jina_client_with_target_executor(tiny_flow, protocol):
    fav = image_doc("base64", Path("."))
    docs = Client(host=tiny_flow.url(protocol)).post("/", inputs=DocumentArray([fav]), target_executor="diffusion",
                                                     parameters={"num_images": 1, "skip_rate": 0.5})
    assert len(docs[0].matches) == 1 and docs[0].matches[0].tags["generator"] == "GLID3-XL"
    # every executor has a complete route, also those the request skipped
    response = Client(host=tiny_flow.url(protocol)).post(
        "/upscale", inputs=DocumentArray([fav]), target_executor="upscaler", return_responses=True)[0]
    assert all(r.end_time.ToNanoseconds() >= r.start_time.ToNanoseconds() > 0 for r in response.routes)


@pytest.fixture(scope="module")
def reference_upscale(tiny_flow):
    """The upscaled picture from the server's own output form (a base64 PNG data URI), to compare every way with."""
    doc = image_doc("base64", Path("."))
    return decode_data_uri(doc.post(tiny_flow.url("grpc") + "/upscale").uri)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("how", DOCARRAY_WAYS)
def test_images_built_each_docarray_way(tiny_flow, reference_upscale, tmp_path, protocol, how):
    server_url = tiny_flow.url(protocol)
    refined = image_doc(how, tmp_path).post(f"{server_url}/diffuse", parameters={"num_images": 1, "seed": 5}).matches
    assert refined[0].text == PROMPT and refined[0].tags["skip_rate"] == 0.5
    upscaled = image_doc(how, tmp_path).post(f"{server_url}/upscale")
    np.testing.assert_array_equal(decode_data_uri(upscaled.uri), reference_upscale)  # decoded to the same pixels


def test_blob_wins_over_a_uri_it_was_loaded_from(tiny_flow, reference_upscale, tmp_path):
    """clip_client and DocArray's load_uri_to_blob() keep the file name in `.uri`: the inline blob is used."""
    path = tmp_path / "fav.png"
    path.write_bytes(png_bytes(IMAGE))
    upscaled = Document(uri=str(path)).load_uri_to_blob().post(tiny_flow.url("grpc") + "/upscale")
    np.testing.assert_array_equal(decode_data_uri(upscaled.uri), reference_upscale)


@pytest.mark.parametrize("uri, message", [
    ("https://example.com/cat.png", "only inline images are accepted"),
    ("data:image/png;charset=utf-8,%89PNGnot-an-image", "not a decodable image"),
    ("data:image/png;base64,@@@", "not valid base64"),
])
def test_non_inline_or_broken_images_are_still_refused(tiny_flow, uri, message):
    with pytest.raises(Exception) as err:
        Document(uri=uri, text=PROMPT).post(tiny_flow.url("grpc") + "/diffuse", parameters={"num_images": 1})
    assert message in error_text(err.value)
    assert Document(text="still serving").post(tiny_flow.url("grpc")).embedding is not None


@pytest.mark.parametrize("how", ["base64", "convert_blob_to_datauri", "blob"])
def test_segment_appends_the_rgba_image_as_a_match(tiny_flow, tmp_path, how):
    result = image_doc(how, tmp_path, text="the cat").post(tiny_flow.url("grpc") + "/segment")
    match = result.matches[0]  # what third-party clients read
    assert len(result.matches) == 1 and match.text == "the cat" and match.tags["text"] == "the cat"
    rgba = decode_data_uri(match.uri)
    assert rgba.shape == (32, 32, 4)
    np.testing.assert_array_equal(rgba[..., :3], IMAGE)
    np.testing.assert_array_equal(decode_data_uri(result.uri), rgba)  # today's result stays on the Document
    (mask,) = [c for c in result.chunks if c.tags["kind"] == "alpha_mask"]
    np.testing.assert_array_equal(decode_data_uri(mask.uri), rgba[..., 3])
    again = result.post(tiny_flow.url("grpc") + "/segment")
    assert len(again.matches) == 1 and len(again.chunks) == 1  # segmenting again replaces, never piles up


def test_encode_embeds_the_text_when_a_document_has_text_and_an_image(tiny_flow, tmp_path):
    url = tiny_flow.url("grpc") + "/encode"
    text_only = Document(text="a cat").post(url).embedding
    with_image = Document(uri=image_doc("base64", tmp_path).uri, text="a cat").post(url).embedding
    with_remote_uri = Document(uri="https://example.com/cat.png", text="a cat").post(url).embedding  # never fetched
    image_only = Document(uri=image_doc("base64", tmp_path).uri).post(url).embedding
    np.testing.assert_allclose(with_image, text_only, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(with_remote_uri, text_only, rtol=1e-5, atol=1e-6)
    assert not np.allclose(image_only, text_only, atol=1e-3)


@pytest.mark.parametrize("call, message", [
    (lambda c: c.index(["a cat"]), "/index: not supported by this server"),
    (lambda c: c.search(["a cat"]), "/search: not supported by this server"),
    (lambda c: c.encode(["a cat"], parameters={"model_name": "ViT-B-32::openai"}),
     "model_name: not supported by this server"),
    (lambda c: c.rank([Document(text="a", matches=[Document(text="b")])], parameters={"model_name": "RN50::openai"}),
     "model_name: not supported by this server"),
])
def test_clip_client_calls_this_server_does_not_offer_get_clear_errors(tiny_flow, call, message):
    from clip_client import Client as ClipClient

    for protocol in ("grpc", "http"):  # README: jina's WebSocket client drops error answers
        with pytest.raises(Exception) as err:
            call(ClipClient(tiny_flow.url(protocol)))
        assert message in error_text(err.value)
    assert ClipClient(tiny_flow.url("grpc")).encode(["still serving"]).shape == (1, 32)


def test_drop_image_content_as_clip_server(tiny_flow):
    docs = DocumentArray([Document(blob=png_bytes(IMAGE), mime_type="image/png")])
    client = Client(host=tiny_flow.url("grpc"))
    kept = client.post("/encode", inputs=docs)
    dropped = client.post("/encode", inputs=docs, parameters={"drop_image_content": True})
    assert kept[0].blob == png_bytes(IMAGE) and not dropped[0].blob
    np.testing.assert_allclose(dropped[0].embedding, kept[0].embedding, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("endpoint", ["/encode", "/rank"])
@pytest.mark.parametrize("name, value", [("model_name", "ViT-B-32::openai"), ("access_paths", "@c")])
def test_clip_server_parameters_this_server_does_not_offer_are_refused(tiny_flow, endpoint, name, value):
    query = Document(text="a cat", matches=[Document(text="a dog")])
    with pytest.raises(Exception) as err:
        Client(host=tiny_flow.url("grpc")).post(endpoint, inputs=DocumentArray([query]), parameters={name: value})
    assert f"{name}: not supported by this server" in error_text(err.value)


@pytest.mark.parametrize("protocol", CLIP_CLIENT_PROTOCOLS)
def test_clip_client_encode_rank_aencode_arank(tiny_flow, tmp_path, protocol):
    from clip_client import Client as ClipClient

    client = ClipClient(tiny_flow.url(protocol))
    path = tmp_path / "cat.png"
    path.write_bytes(png_bytes(IMAGE))
    embeddings = client.encode(["a cat", str(path), image_doc("base64", tmp_path).uri])  # text, file, data URI
    assert embeddings.shape == (3, 32)
    np.testing.assert_allclose(embeddings[1], embeddings[2], rtol=1e-5, atol=1e-6)  # same picture either way
    encoded = client.encode(DocumentArray([Document(blob=png_bytes(IMAGE), mime_type="image/png")]))
    np.testing.assert_allclose(encoded.embeddings[0], embeddings[1], rtol=1e-5, atol=1e-6)
    query = Document(uri=image_doc("base64", tmp_path).uri, matches=[Document(text="a dog"), Document(text="a cat")])
    ranked = client.rank([query])[0]
    assert {m.text for m in ranked.matches} == {"a dog", "a cat"}
    scores = [m.scores["clip_score"].value for m in ranked.matches]
    assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0, abs=1e-5)

    async def both():
        return (await client.aencode(["a cat"]),
                await client.arank([Document(text="a cat", matches=[Document(text="a dog"), Document(text="a cat")])]))

    async_embeddings, async_ranked = asyncio.run(both())
    np.testing.assert_allclose(async_embeddings[0], embeddings[0], rtol=1e-5, atol=1e-6)
    assert async_ranked[0].matches[0].text == "a cat"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_profilers_empty_probe_is_answered(tiny_flow, protocol):
    """`jina.Client.profiling()` posts an empty Document to `/`: a latency probe, answered by every executor at once."""
    report = Client(host=tiny_flow.url(protocol)).profiling(show_table=False)
    assert {"Roundtrip", "dalle", "diffusion", "rerank"} <= set(report)
    answered = Client(host=tiny_flow.url(protocol)).post("/", inputs=DocumentArray([Document()]))
    assert len(answered) == 1 and not answered[0].text and not len(answered[0].matches)


def test_clip_client_profile(tiny_flow):
    from clip_client import Client as ClipClient

    report = ClipClient(tiny_flow.url("grpc")).profile()
    assert report["Roundtrip"] > 0 and report["CLIP model"] >= 0


def test_default_diffuse_fits_http(tiny_flow, tmp_path):
    """The README's step 2 without parameters (36 refinements, ~7.7 MB here) over HTTP; gRPC has no size limit."""
    matches = image_doc("base64", tmp_path).post(tiny_flow.url("http") + "/diffuse").matches
    assert len(matches) == 36 and all(m.text == PROMPT for m in matches)


# ---------------------------------------------------------------- `jina flow --uses flow.yml`, HTTP + target_executor

def test_jina_flow_cli_serves_http_target_executor(tmp_path):
    """The README's `jina flow --uses flow.yml`, verbatim but for its ports: its gateway repairs the answers too."""
    ports = free_ports(3)
    flow_yml = (REPO_ROOT / "flow.yml").read_text()
    flow_yml, count = re.subn(r"port: \[51005, 51006, 51007\]", f"port: {ports}", flow_yml)
    assert count == 1, "flow.yml's port line changed; update this test"
    (tmp_path / "flow.yml").write_text(flow_yml)
    (tmp_path / "executors").symlink_to(REPO_ROOT / "executors")  # flow.yml names them relative to itself
    jina = Path(sys.executable).with_name("jina")
    log_path = tmp_path / "flow.log"
    env = {**os.environ, "DALLE_FLOW_PRESET": "tiny", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    with open(log_path, "w") as log:
        process = subprocess.Popen([str(jina), "flow", "--uses", "flow.yml"], cwd=tmp_path, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while "ready to serve" not in log_path.read_text(errors="replace"):
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.5)
        url = f"http://127.0.0.1:{ports[1]}"
        fav = image_doc("base64", tmp_path)
        refined = fav.post(url, parameters={"skip_rate": 0.5, "num_images": 1}, target_executor="diffusion").matches
        assert len(refined) == 1 and refined[0].text == PROMPT
        upscaled = Client(host=url).post("/upscale", inputs=DocumentArray([fav]), target_executor="upscaler")
        assert decode_data_uri(upscaled[0].uri).shape == (128, 128, 3)
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_websocket_answers_the_readme_limit(tiny_flow, tmp_path):
    """README: over WebSocket, `/diffuse` with `num_images` up to 16 fits jina's client limit of 4 MiB (noise images,
    the largest PNGs; the default 36 does not fit, and the README says so)."""
    fav = image_doc("base64", tmp_path)
    matches = fav.post(tiny_flow.url("websocket") + "/diffuse", parameters={"num_images": 16}).matches
    assert len(matches) == 16
