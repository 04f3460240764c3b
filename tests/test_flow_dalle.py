"""DALL·E Mega through the Flow (tiny preset): the seed README's step 1, ranking, seeds, bad parameters."""
from __future__ import annotations

import pytest
from docarray import Document

from tests.conftest import decode_data_uri, error_text

pytestmark = pytest.mark.flow


def dalle_matches(result):
    return [m for m in result.matches if m.tags["generator"] == "DALLE-mega"]


def test_seed_readme_step_one(tiny_flow):
    prompt = "an oil painting of a humanoid robot playing chess in the style of Matisse"
    da = Document(text=prompt).post(tiny_flow.url("grpc"), parameters={"num_images": 16}).matches
    dalle = [m for m in da if m.tags["generator"] == "DALLE-mega"]
    assert len(dalle) == 16
    scores = [m.scores["clip_score"].value for m in da]
    assert scores == sorted(scores, reverse=True)  # every candidate ranked together, index 0 best
    for match in dalle:
        assert decode_data_uri(match.uri).shape == (256, 256, 3)
        assert match.embedding is None and not match.blob
        tags = match.tags
        assert tags["text"] == prompt and tags["preset"] == "tiny"
        assert {"seed", "cond_scale", "top_k", "top_p", "temperature", "request_time", "created_time"} <= set(tags)


def test_same_seed_same_images_other_seed_other_images(tiny_flow):
    def images(seed):
        result = Document(text="a red fox").post(tiny_flow.url("grpc"), parameters={"num_images": 2, "seed": seed})
        return sorted(m.uri for m in dalle_matches(result))

    first = images(42)
    assert first == images(42)
    assert first != images(43)


def test_drawn_seed_is_returned_and_reproduces(tiny_flow):
    result = Document(text="a blue bird").post(tiny_flow.url("http"), parameters={"num_images": 1})
    match = dalle_matches(result)[0]
    again = Document(text="a blue bird").post(tiny_flow.url("http"),
                                              parameters={"num_images": 1, "seed": match.tags["seed"]})
    assert dalle_matches(again)[0].uri == match.uri


@pytest.mark.parametrize("parameters, message", [
    ({"num_images": "many"}, "num_images: must be an integer between 1 and 32, got 'many'"),
    ({"num_images": 40}, "num_images: must be an integer between 1 and 32, got 40"),  # GLID-3 refuses it too
    ({"top_p": 1.5}, "top_p: must be a number between 0.01 and 1, got 1.5"),
    ({"cond_scale": "high"}, "cond_scale: must be a number between 1 and 100, got 'high'"),
    ({"seed": -3}, "seed: must be an integer between 0 and 4294967295, got -3"),
])
def test_bad_parameters_get_clear_errors(tiny_flow, parameters, message):
    with pytest.raises(Exception) as err:
        Document(text="a cat").post(tiny_flow.url("grpc"), parameters=parameters)
    assert message in error_text(err.value)
