"""End to end through the Flow (tiny preset): GLID-3 XL candidates on `/`, refinements on `/diffuse` and on `/` with
target_executor='diffusion', reproducibility, and bad inputs. Steps stay small (the tiny preset defaults to 10)."""
from __future__ import annotations

import numpy as np
import pytest
from docarray import Document

from tests.conftest import decode_data_uri, error_text, png_data_uri, test_image

pytestmark = pytest.mark.flow

PROMPT = "an oil painting of a humanoid robot playing chess in the style of Matisse"
TAGS = {"generator", "text", "seed", "steps", "guidance_scale", "num_images", "image_index", "request_time",
        "created_time", "preset"}


def glid3(matches):
    return sorted((m for m in matches if m.tags.get("generator") == "GLID3-XL"), key=lambda m: m.tags["image_index"])


def pixels(matches) -> list[bytes]:
    return [decode_data_uri(m.uri).tobytes() for m in matches]


def check_image_match(match, prompt):
    image = decode_data_uri(match.uri)
    assert image.shape == (256, 256, 3) and image.dtype == np.uint8 and image.std() > 0
    assert TAGS <= set(match.tags) and match.tags["preset"] == "tiny"
    assert match.tags["text"] == prompt and match.tags["generator"] == "GLID3-XL"
    assert match.embedding is None and not match.blob and match.tensor is None


def test_prompt_gets_ranked_glid3_candidates(tiny_flow):
    result = Document(text=PROMPT).post(tiny_flow.url("grpc"), parameters={"num_images": 3, "steps": 6, "seed": 5})
    assert np.asarray(result.embedding).shape == (32,)  # rerank's, CLIP of the prompt
    candidates = glid3(result.matches)
    assert [m.tags["image_index"] for m in candidates] == [0, 1, 2]
    assert len(set(pixels(candidates))) == 3
    for m in candidates:
        check_image_match(m, PROMPT)
        assert (m.tags["seed"], m.tags["steps"], m.tags["guidance_scale"]) == (5, 6, 5.0)
        assert "skip_rate" not in m.tags
    scores = [m.scores["clip_score"].value for m in result.matches]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
    assert all(m.embedding is None for m in result.matches)


def test_default_candidate_count_on_slash(tiny_flow):
    result = Document(text="a red fox").post(tiny_flow.url("grpc"), parameters={"steps": 4})
    candidates = glid3(result.matches)
    assert len(candidates) == 2 and candidates[0].tags["num_images"] == 2


def test_seed_readme_step2_then_the_later_target_executor_form(tiny_flow):
    server_url = tiny_flow.url("grpc")
    da = Document(text=PROMPT).post(server_url, parameters={"num_images": 2, "steps": 6}).matches
    fav = da[0]  # a candidate as it came back: image + tags, no .text; the prompt travels in tags['text']

    diffused = fav.post(f"{server_url}/diffuse", parameters={"skip_rate": 0.5}).matches  # the seed README's call
    assert len(diffused) == 36  # the seed README's count; its step 3 picks diffused[34]
    for k, m in enumerate(diffused):
        check_image_match(m, PROMPT)
        assert m.tags["image_index"] == k and m.tags["skip_rate"] == 0.5 and m.tags["steps"] == 10
    seed = diffused[0].tags["seed"]
    assert {m.tags["seed"] for m in diffused} == {seed}  # drawn once for the Document, returned for reproduction
    assert len(set(pixels(diffused))) == 36

    # the later original's form: `/` routed to diffusion only; a Document with an image is refined, not ranked.
    # Same seed and parameters -> the very same images as /diffuse (4 of them: the equality does not need 36).
    parameters = {"skip_rate": 0.5, "num_images": 4, "seed": seed}
    later = fav.post(server_url, parameters=parameters, target_executor="diffusion").matches
    assert [m.tags["image_index"] for m in later] == list(range(4))
    assert pixels(later) == pixels(fav.post(f"{server_url}/diffuse", parameters=parameters).matches)


def test_same_seed_same_images_other_seed_other_images(tiny_flow):
    def run(seed):
        params = {"num_images": 2, "steps": 4, "seed": seed}
        return pixels(glid3(Document(text="a cyberpunk city at night").post(tiny_flow.url("grpc"),
                                                                            parameters=params).matches))

    first = run(1234)
    assert run(1234) == first
    assert run(1235) != first


def refine_doc(**kwargs) -> Document:
    return Document(uri=png_data_uri(test_image(64, seed=3)), **{"text": "a zebra", **kwargs})


def diffuse_one(flow, doc, **params):
    parameters = {"num_images": 1, "steps": 4, "skip_rate": 0.0, "seed": 9, **params}
    return doc.post(flow.url("grpc") + "/diffuse", parameters=parameters).matches


def test_clip_embedding_conditions_refinement(tiny_flow):
    computed = diffuse_one(tiny_flow, refine_doc())  # no .embedding: the executor embeds the prompt with its CLIP
    encoded = Document(text="a zebra").post(tiny_flow.url("grpc") + "/encode").embedding
    given = diffuse_one(tiny_flow, refine_doc(embedding=np.asarray(encoded)))
    other = diffuse_one(tiny_flow, refine_doc(embedding=-np.asarray(encoded)))
    assert pixels(given) == pixels(computed)  # same CLIP, same embedding
    assert pixels(other) != pixels(computed)  # the embedding really enters the UNet (clip_proj)


@pytest.mark.parametrize("endpoint, doc, parameters, message", [
    ("/diffuse", Document(text="a zebra"), {}, "docs[0]: the Document carries no image"),
    ("/diffuse", Document(uri="https://example.com/cat.png", text="x"), {}, "only inline images are accepted"),
    ("/diffuse", refine_doc(), {"skip_rate": 1.5}, "skip_rate: must be a number between 0 and 1, got 1.5"),
    # a float NaN cannot be sent at all: Jina's protobuf conversion refuses it before any executor runs (and its
    # gateway then spins at shutdown), so NaN as a client can send it is text; float NaN is covered by the unit tests
    ("/diffuse", refine_doc(), {"skip_rate": "NaN"}, "skip_rate: must be a number between 0 and 1, got 'NaN'"),
    ("/diffuse", refine_doc(), {"skip_rate": 0.97, "steps": 100},
     "skip_rate: 0.97 skips 97 of 100 steps and leaves 3; at least 4 must remain (skip_rate <= 0.96 for steps=100)"),
    ("/diffuse", refine_doc(), {"skip_rate": 0.7}, "leaves 3; at least 4 must remain (skip_rate <= 0.6 for steps=10)"),
    ("/diffuse", refine_doc(), {"num_images": 37}, "num_images: must be an integer between 1 and 36, got 37"),
    ("/diffuse", refine_doc(), {"steps": 2}, "steps: must be an integer between 4 and 1000, got 2"),
    ("/diffuse", refine_doc(), {"guidance_scale": "high"}, "guidance_scale: must be a number between 0 and 50"),
    ("/diffuse", refine_doc(text=""), {}, "docs[0].text: the prompt is empty"),
    ("/diffuse", refine_doc(embedding=np.ones(7)), {}, "docs[0].embedding: must be a 32-d CLIP embedding"),
    ("/", Document(text="a zebra"), {"seed": -1}, "seed: must be an integer between 0 and"),
])
def test_bad_inputs_get_clear_errors_and_flow_keeps_serving(tiny_flow, endpoint, doc, parameters, message):
    with pytest.raises(Exception) as err:
        doc.post(tiny_flow.url("grpc") + endpoint, parameters=parameters)
    assert message in error_text(err.value)
    assert len(diffuse_one(tiny_flow, refine_doc())) == 1
