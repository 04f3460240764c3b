"""The GLID-3 XL executor's own logic, without a Flow: parameters, prompt and CLIP embedding choice, start-up paths."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from docarray import Document, DocumentArray

from dalle_flow.serving.weights import MissingWeightsError
from dalle_flow.models.clip import tiny_clip
from dalle_flow.pipelines.glid3 import GENERATE_PARAMS, REFINE_PARAMS, Glid3Pipeline
from tests.conftest import load_script, png_data_uri, test_image



@pytest.fixture(scope="module")
def ex():
    return load_script("executors/glid3/executor.py")


# -- parameters -------------------------------------------------------------------------------------------------------

def test_defaults_per_mode():
    text = GENERATE_PARAMS.parse({})
    assert text == {"num_images": 2, "skip_rate": 0.5, "steps": 100, "guidance_scale": 5.0, "seed": None}
    assert REFINE_PARAMS.with_defaults(steps=10).parse(None)["num_images"] == 36
    # gRPC sends numbers as doubles; unrelated keys belong to other executors
    got = REFINE_PARAMS.parse({"num_images": 36.0, "steps": 8.0, "seed": 3.0, "top_k": 50})
    assert (got["num_images"], got["steps"], got["seed"]) == (36, 8, 3)


def test_the_executor_serves_the_declarations_with_its_configured_steps(tiny_executor):
    assert tiny_executor.params[False] == GENERATE_PARAMS.with_defaults(steps=tiny_executor.default_steps)
    assert tiny_executor.params[True] == REFINE_PARAMS.with_defaults(steps=tiny_executor.default_steps)


@pytest.mark.parametrize("params, message", [
    ({"num_images": 0}, "num_images: must be an integer between 1 and 36, got 0"),
    ({"num_images": "many"}, "num_images: must be an integer between 1 and 36, got 'many'"),
    ({"skip_rate": -0.1}, "skip_rate: must be a number between 0 and 1, got -0.1"),
    ({"skip_rate": math.inf}, "skip_rate: must be a number between 0 and 1, got inf"),
    ({"skip_rate": math.nan}, "skip_rate: must be a number between 0 and 1, got nan"),
    ({"steps": 3}, "steps: must be an integer between 4 and 1000, got 3"),
    ({"steps": 10.5}, "steps: must be an integer between 4 and 1000, got 10.5"),
    ({"guidance_scale": math.nan}, "guidance_scale: must be a number between 0 and 50, got nan"),
    ({"seed": 2**40}, "seed: must be an integer between 0 and"),
])
def test_bad_parameters_name_field_and_limit(params, message):
    for declaration in (GENERATE_PARAMS, REFINE_PARAMS):  # skip_rate is checked on `/` too: the request names it
        with pytest.raises(ValueError) as err:
            declaration.parse(params)
        assert message in str(err.value)


def test_the_skip_rate_rule_holds_for_refinement_only():
    assert GENERATE_PARAMS.parse({"skip_rate": 0.99})["skip_rate"] == 0.99
    with pytest.raises(ValueError, match=r"skip_rate: 0.99 skips 99 of 100 steps and leaves 1; at least 4 must "
                                         r"remain \(skip_rate <= 0.96 for steps=100\)"):
        REFINE_PARAMS.parse({"skip_rate": 0.99})


# -- prompt and CLIP embedding ----------------------------------------------------------------------------------------

def test_prompt_from_text_or_candidate_tags(ex):
    assert ex.document_prompt(Document(text="a fox"), "docs[0]") == "a fox"
    assert ex.document_prompt(Document(text="a fox", tags={"text": "other"}), "d") == "a fox"
    assert ex.document_prompt(Document(tags={"text": "from tags"}), "d") == "from tags"
    for doc in (Document(), Document(text="  "), Document(tags={"text": 5})):
        with pytest.raises(ValueError, match=r"docs\[2\]\.text: the prompt is empty"):
            ex.document_prompt(doc, "docs[2]")


class CountingClip:
    def __init__(self, dim):
        self.dim, self.calls = dim, []

    def encode_text(self, texts):
        self.calls.append(list(texts))
        return np.full((len(texts), self.dim), float(len(texts[0])), np.float32)


def test_clip_embedding_choice(ex):
    clip = CountingClip(4)
    # no clip_proj: nothing is used or checked, CLIP is never asked
    assert ex.prompt_clip_embedding(Document(embedding=np.ones(9)), "x", None, None, "d") is None
    own = ex.prompt_clip_embedding(Document(embedding=np.arange(4.0)), "abc", clip, 4, "d")
    assert own.dtype == np.float32 and np.array_equal(own, np.arange(4.0)) and clip.calls == []
    computed = ex.prompt_clip_embedding(Document(), "abc", clip, 4, "d")
    assert clip.calls == [["abc"]] and np.array_equal(computed, np.full(4, 3.0))
    for bad in (np.ones(5), np.ones((1, 4)), np.array([1.0, np.nan, 0, 0])):
        with pytest.raises(ValueError, match=r"docs\[1\]\.embedding: must be a 4-d CLIP embedding"):
            ex.prompt_clip_embedding(Document(embedding=bad), "abc", clip, 4, "docs[1]")


# -- the executor -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_executor(ex):
    return ex.GLID3Diffusion(preset="tiny", batch_size=2)


def test_tiny_preset_runs_the_clip_path(tiny_executor):
    assert tiny_executor.clip_dim == 32 and tiny_executor.clip.embedding_dim == 32
    assert tiny_executor.default_steps == 10
    np.testing.assert_allclose(tiny_executor.blank_clip, tiny_executor.clip.encode_text([""])[0])


def test_mixed_request_on_slash_and_batching(tiny_executor):
    docs = DocumentArray([Document(text="a cat"), Document(uri=png_data_uri(test_image(48)), tags={"text": "a dog"})])
    tiny_executor.generate(docs, {"steps": 4, "seed": 11, "num_images": 3, "skip_rate": 0.0})
    for doc, refined in zip(docs, (False, True)):
        assert [m.tags["image_index"] for m in doc.matches] == [0, 1, 2]  # 3 images in batches of 2
        assert all(("skip_rate" in m.tags) == refined and m.tags["seed"] == 11 for m in doc.matches)
    assert docs[1].matches[0].tags["text"] == "a dog" and docs[0].embedding is None


def test_nothing_is_sampled_when_a_later_document_is_bad(tiny_executor):
    docs = DocumentArray([Document(text="fine", uri=png_data_uri(test_image(32))), Document(text="no image")])
    with pytest.raises(ValueError, match=r"docs\[1\]: the Document carries no image"):
        tiny_executor.diffuse(docs, {"steps": 4, "skip_rate": 0.0})
    assert len(docs[0].matches) == 0


def test_drawn_seeds_differ_per_document_and_reproduce(tiny_executor):
    docs = DocumentArray([Document(text="same"), Document(text="same")])
    tiny_executor.generate(docs, {"steps": 4, "num_images": 1})
    seeds = [d.matches[0].tags["seed"] for d in docs]
    assert seeds[0] != seeds[1] and docs[0].matches[0].uri != docs[1].matches[0].uri
    again = DocumentArray([Document(text="same")])
    tiny_executor.generate(again, {"steps": 4, "num_images": 1, "seed": seeds[1]})
    assert again[0].matches[0].uri == docs[1].matches[0].uri


def _fake_real_weights(monkeypatch, ex, clip_embed_dim, clip=None):
    """The real start-up path with tiny models: weight resolution and CLIP loading are observed, not performed."""
    resolved = []
    monkeypatch.setattr(ex, "resolve", lambda group, name, weights_dir: resolved.append((group, name))
                        or f"/w/{group}/{name}")

    def from_weights(unet, kl, bert, vocab, device, dtype):
        assert (unet, kl, bert, vocab) == ("/w/glid3/finetune.pt", "/w/glid3/kl-f8.pt", "/w/glid3/bert.pt",
                                           "/w/glid3/vocab.txt")
        return Glid3Pipeline.tiny(device, dtype, clip_embed_dim=clip_embed_dim)

    monkeypatch.setattr(ex.Glid3Pipeline, "from_weights", staticmethod(from_weights))
    loaded = []

    def load_clip(path, device, dtype):
        loaded.append(path)
        if clip is None:
            raise AssertionError("CLIP must not be loaded for a checkpoint without clip_proj")
        return clip

    monkeypatch.setattr(ex, "load_clip", load_clip)
    monkeypatch.setattr(ex, "resolve_hf_model", lambda group, name, weights_dir: f"/hf/{group}/{name}")
    return resolved, loaded


def test_real_checkpoint_without_clip_proj_loads_no_clip(ex, monkeypatch):
    resolved, loaded = _fake_real_weights(monkeypatch, ex, clip_embed_dim=None)
    executor = ex.GLID3Diffusion(preset="real", device="cpu")
    assert resolved == [("glid3", n) for n in ("finetune.pt", "kl-f8.pt", "bert.pt", "vocab.txt")]
    assert executor.clip is None and executor.blank_clip is None and loaded == []
    assert executor.default_steps == 100
    docs = DocumentArray([Document(text="a cat", embedding=np.ones(3))])  # any embedding is ignored
    executor.generate(docs, {"steps": 4, "num_images": 1})
    assert len(docs[0].matches) == 1 and "preset" not in docs[0].matches[0].tags


def test_real_checkpoint_with_clip_proj_loads_the_named_clip(ex, monkeypatch):
    clip = tiny_clip()
    _, loaded = _fake_real_weights(monkeypatch, ex, clip_embed_dim=32, clip=clip)
    executor = ex.GLID3Diffusion(preset="real", device="cpu", clip_model_name="some/clip")
    assert loaded == ["/hf/clip/some/clip"] and executor.clip is clip
    np.testing.assert_allclose(executor.blank_clip, clip.encode_text([""])[0])
    _fake_real_weights(monkeypatch, ex, clip_embed_dim=16, clip=clip)
    with pytest.raises(ValueError, match="finetune.pt projects 16-d CLIP embeddings but some/clip produces 32-d"):
        ex.GLID3Diffusion(preset="real", device="cpu", clip_model_name="some/clip")


def test_missing_weights_fail_at_start_naming_the_file(ex, monkeypatch, tmp_path):
    monkeypatch.setenv("DALLE_FLOW_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("DALLE_FLOW_OFFLINE", "1")
    monkeypatch.setattr("dalle_flow.serving.weights.CACHE_DIR", tmp_path / "cache")
    with pytest.raises(MissingWeightsError, match="'finetune.pt' \\(glid3\\) not found"):
        ex.GLID3Diffusion(preset="real", device="cpu")


@pytest.mark.parametrize("config, message", [
    ({"batch_size": 0}, "batch_size: must be an integer between 1 and 36, got 0"),
    ({"tiny_steps": 2}, "steps: must be an integer between 4 and 1000, got 2"),
])
def test_bad_configuration_stops_the_start(ex, config, message):
    with pytest.raises(ValueError, match=message):
        ex.GLID3Diffusion(preset="tiny", **config)


def test_too_few_steps_refused_before_any_candidate_is_sampled(tiny_executor):
    docs = DocumentArray([Document(text="text first"), Document(uri=png_data_uri(test_image(32)), text="then refine")])
    with pytest.raises(ValueError, match="skip_rate: 0.7 skips 7 of 10 steps and leaves 3"):
        tiny_executor.generate(docs, {"skip_rate": 0.7, "steps": 10})
    assert len(docs[0].matches) == 0 and len(docs[1].matches) == 0
