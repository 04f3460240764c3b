"""The compatibility rules without a Flow: CLIP-as-service's text rule and refusals, profiler probes, the gateway's
repairs of answers (route end times, unsupported clip_client calls)."""
from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
from docarray import Document, DocumentArray
from jina.proto import jina_pb2
from jina.types.request.data import DataRequest

from dalle_flow.deploy import gateway
from dalle_flow.serving.clip_protocol import clip_input, drop_image_content, refuse_unsupported_parameters
from dalle_flow.serving.parameters import document_prompt, is_probe
from tests.conftest import png_data_uri, test_image


def test_clip_input_follows_clip_server_text_first_unless_asked_for_the_image():
    uri = png_data_uri(test_image(8))
    assert clip_input(Document(uri=uri, text="a cat"), "d") == "a cat"
    assert clip_input(Document(uri="https://example.com/cat.png", text="a cat"), "d") == "a cat"  # never fetched
    assert clip_input(Document(uri=uri, text="a cat"), "d", image_first=True).shape == (8, 8, 3)
    assert clip_input(Document(text="a cat"), "d", image_first=True) == "a cat"
    with pytest.raises(ValueError, match="d: carries neither text nor an image"):
        clip_input(Document(), "d")
    with pytest.raises(ValueError, match="only inline images"):
        clip_input(Document(uri="https://example.com/cat.png"), "d")


def test_unsupported_clip_server_parameters_are_refused_and_drop_image_content_applies():
    refuse_unsupported_parameters({"drop_image_content": True, "batch_size": 8})
    refuse_unsupported_parameters(None)
    for name in ("model_name", "access_paths", "traversal_paths"):
        with pytest.raises(ValueError, match=f"{name}: not supported by this server"):
            refuse_unsupported_parameters({name: "x"})
    docs = DocumentArray([Document(blob=b"png", matches=[Document(blob=b"m")])])
    drop_image_content(docs, {"drop_image_content": False}, matches=True)
    assert docs[0].blob == b"png"
    drop_image_content(docs, {"drop_image_content": True}, matches=True)
    assert not docs[0].blob and not docs[0].matches[0].blob


def test_probe_is_only_a_request_of_empty_documents():
    assert is_probe(DocumentArray([Document()])) and is_probe(DocumentArray([Document(text="")]))
    assert not is_probe(DocumentArray()) and not is_probe(DocumentArray([Document(), Document(text="a cat")]))
    assert not is_probe(DocumentArray([Document(text="  ")]))  # refused as an empty prompt instead
    assert not is_probe(DocumentArray([Document(tensor=np.zeros((2, 2, 3)))]))


def test_document_prompt_reads_text_then_the_text_tag():
    assert document_prompt(Document(text="a", tags={"text": "b"}), "d") == "a"
    assert document_prompt(Document(blob=b"x", tags={"text": "b"}), "d") == "b"
    with pytest.raises(ValueError, match=r"d\.text: say what"):
        document_prompt(Document(blob=b"x"), "d", hint="say what")


def answer(endpoint: str, skipped: bool) -> DataRequest:
    response = DataRequest()
    response.header.exec_endpoint = endpoint
    for name in ("gateway", "dalle"):
        route = response.routes.add()
        route.executor = name
        route.start_time.FromDatetime(datetime.utcnow())  # naive, as Jina's topology graph records it
        if not skipped or name == "gateway":
            route.end_time.GetCurrentTime()
    return response


def test_skipped_executors_get_an_end_time_that_http_clients_can_parse():
    from google.protobuf import json_format

    from jina.serve.runtimes.gateway.models import JinaResponseModel

    response = answer("/upscale", skipped=True)
    assert "end_time" not in response.to_dict()["routes"][1]
    gateway.complete_route_times(response)
    skipped = response.routes[1]
    assert skipped.end_time == skipped.start_time
    # what the HTTP gateway sends, parsed as Jina's HTTP client parses it (it failed on the naive end time before)
    body = JinaResponseModel(**response.to_dict()).json(by_alias=True)
    json_format.Parse(body, jina_pb2.DataRequestProto(), ignore_unknown_fields=True)


def test_unsupported_clip_calls_become_clear_errors_and_others_pass():
    for endpoint, message in (("/index", "/index: not supported by this server"),
                              ("/search", "/search: not supported by this server"),
                              ("/encode/ViT-B-32::openai", "model_name: not supported by this server"),
                              ("/rank/RN50::openai", "model_name: not supported by this server")):
        response = answer(endpoint, skipped=True)
        gateway.refuse_unsupported_clip_calls(response)
        assert response.header.status.code == jina_pb2.StatusProto.ERROR
        assert message in response.header.status.exception.args[0]
    for endpoint in ("/", "/encode", "/rank", "/diffuse", "/no-such-endpoint"):
        response = answer(endpoint, skipped=False)
        gateway.refuse_unsupported_clip_calls(response)
        assert response.header.status.code == jina_pb2.StatusProto.SUCCESS
