"""CLIPSeg: tiny model built offline, segmentation API, the four thresholding types, invert, RGBA, loading."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dalle_flow.models.clipseg import load_clipseg, tiny_clipseg
from dalle_flow.models.clipseg.loader import tiny_image_processor
from dalle_flow.pipelines.clipseg import THRESHOLDING_TYPES, apply_threshold, rgba, segment
from dalle_flow.runtime.tiny_tokenizer import TINY_WORDS, tiny_vocabulary
from dalle_flow.serving import weights


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Nothing here may touch the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DALLE_FLOW_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny():
    return tiny_clipseg()


def random_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def step_mask(h=20, w=20, low=0.2, high=1.0):
    """Left half `low`, right half `high`."""
    mask = np.full((h, w), low, np.float32)
    mask[:, w // 2:] = high
    return mask


# ---------------------------------------------------------------- tiny model and tokenizer

def test_tiny_is_deterministic():
    (a, _), (b, _) = tiny_clipseg(), tiny_clipseg()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    other, _ = tiny_clipseg(seed=1)
    assert not torch.equal(other.decoder.film_mul.weight, a.decoder.film_mul.weight)


def test_tiny_tokenizer(tiny):
    tokenizer = tiny[1].tokenizer
    ids = tokenizer("A  Photo of a CAT").input_ids
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens == ["<|startoftext|>", "a</w>", "photo</w>", "of</w>", "a</w>", "cat</w>", "<|endoftext|>"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id == len(tokenizer) - 1
    spelled = tokenizer.convert_ids_to_tokens(tokenizer("zebra").input_ids)[1:-1]
    assert spelled == ["z", "e", "b", "r", "a</w>"]  # unknown words fall back to bytes
    assert len(tokenizer("é ünïcode ✓").input_ids) > 2
    vocab, merges = tiny_vocabulary()
    assert all(word + "</w>" in vocab for word in TINY_WORDS) and len(vocab) == len(tokenizer)


# ---------------------------------------------------------------- segment

def test_segment_shape_range_determinism(tiny):
    model, processor = tiny
    image = random_image(30, 47)
    mask = segment(model, processor, image, "a red cat")
    assert mask.shape == (30, 47) and mask.dtype == np.float32
    assert 0 <= mask.min() and mask.max() <= 1
    assert np.array_equal(mask, segment(model, processor, image, "a red cat"))
    assert not np.array_equal(mask, segment(model, processor, image, "the blue sky"))
    assert segment(model, processor, random_image(3, 5), "dog").shape == (3, 5)
    long_prompt = " ".join(["tree"] * 100)  # longer than the text model's positions: truncated
    assert segment(model, processor, image, long_prompt).shape == (30, 47)


@pytest.mark.parametrize("image, prompt, message", [
    (np.zeros((8, 8, 3), np.float32), "cat", "uint8"),
    (np.zeros((8, 8, 4), np.uint8), "cat", "uint8"),
    (np.zeros((8, 8, 3), np.uint8), "  ", "prompt"),
    (np.zeros((8, 8, 3), np.uint8), None, "prompt"),
])
def test_segment_rejects_bad_input(tiny, image, prompt, message):
    with pytest.raises(ValueError, match=message):
        segment(*tiny, image, prompt)


def test_end_to_end_rgba(tiny):
    image = random_image(24, 32, seed=3)
    alpha = apply_threshold(segment(*tiny, image, "person"), "binary", binary_thresh_strength=85)
    out = rgba(image, alpha)
    assert out.shape == (24, 32, 4) and out.dtype == np.uint8
    assert np.array_equal(out[..., :3], image) and np.array_equal(out[..., 3], alpha)


# ---------------------------------------------------------------- thresholding

def test_none_is_the_stretched_map_inverted():
    mask = np.linspace(0, 0.5, 12, dtype=np.float32).reshape(3, 4)
    grey = (mask * np.float32(255) / np.float32(0.5)).astype(np.uint8)  # stretched so the max is 255
    assert np.array_equal(apply_threshold(mask, "none", invert=True), grey)
    alpha = apply_threshold(mask, "none")
    assert np.array_equal(alpha, 255 - grey)
    assert alpha[0, 0] == 255 and alpha[-1, -1] == 0  # most likely pixel fully transparent


def test_binary_threshold_strength():
    mask = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    grey = (mask * 255).astype(np.uint8)
    for strength in (0, 85, 200):
        alpha = apply_threshold(mask, "binary", binary_thresh_strength=strength)
        assert set(np.unique(alpha)) <= {0, 255}
        assert np.array_equal(alpha == 0, grey > strength)  # transparent exactly where grey > strength
    loose = (apply_threshold(mask, "binary", binary_thresh_strength=50) == 0).sum()
    strict = (apply_threshold(mask, "binary", binary_thresh_strength=150) == 0).sum()
    assert loose > strict  # lower strength selects more
    # only relative values matter: the map is stretched to its maximum first
    assert np.array_equal(apply_threshold(mask * 0.5, "binary"), apply_threshold(mask, "binary"))
    assert (apply_threshold(np.zeros((4, 4)), "binary") == 255).all()  # nothing found: nothing transparent


@pytest.mark.parametrize("kind", ["adaptive_mean", "adaptive_gaussian"])
def test_adaptive_marks_dark_side_of_edges(kind):
    mask = step_mask()
    for block, reach in ((5, 2), (9, 4), (10, 4)):  # an even block is lowered to the odd one below
        alpha = apply_threshold(mask, kind, adaptive_thresh_block_size=block, adaptive_thresh_c=2.0)
        opaque_cols = np.flatnonzero((alpha == 255).all(axis=0))
        # flat regions pass (grey > local mean - C) and go transparent; dark pixels whose neighbourhood reaches the
        # bright half fall below their local mean and stay opaque
        assert opaque_cols.tolist() == list(range(10 - reach, 10)), (block, opaque_cols)
        assert (alpha[:, :10 - reach] == 0).all() and (alpha[:, 10:] == 0).all()
    flat = np.full((8, 8), 0.7, np.float32)
    assert (apply_threshold(flat, kind, adaptive_thresh_c=2.0) == 0).all()  # grey 255 > 255 - 2
    assert (apply_threshold(flat, kind, adaptive_thresh_c=-2.0) == 255).all()  # grey 255 > 257 never


def test_adaptive_types_differ():
    mask = np.random.default_rng(1).random((32, 32)).astype(np.float32)
    results = {kind: apply_threshold(mask, kind, adaptive_thresh_block_size=7) for kind in THRESHOLDING_TYPES}
    keys = list(results)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            assert not np.array_equal(results[a], results[b]), (a, b)


@pytest.mark.parametrize("kind", THRESHOLDING_TYPES)
def test_invert_flips_alpha(kind):
    mask = np.random.default_rng(2).random((16, 24)).astype(np.float32)
    plain = apply_threshold(mask, kind)
    inverted = apply_threshold(mask, kind, invert=True)
    assert plain.shape == (16, 24) and plain.dtype == np.uint8
    assert np.array_equal(inverted, 255 - plain)


@pytest.mark.parametrize("kwargs, message", [
    (dict(thresholding_type="otsu"), "thresholding_type"),
    (dict(binary_thresh_strength=300), "binary_thresh_strength"),
    (dict(binary_thresh_strength=85.5), "binary_thresh_strength"),
    (dict(thresholding_type="adaptive_mean", adaptive_thresh_block_size=2), "block_size"),
    (dict(thresholding_type="adaptive_mean", adaptive_thresh_block_size=257), "block_size"),
    (dict(thresholding_type="adaptive_gaussian", adaptive_thresh_c=float("nan")), "adaptive_thresh_c"),
    (dict(thresholding_type="adaptive_gaussian", adaptive_thresh_c=300.0), "adaptive_thresh_c"),
    (dict(invert="yes"), "invert"),
])
def test_apply_threshold_rejects_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        apply_threshold(step_mask(), **kwargs)


@pytest.mark.parametrize("mask", [np.zeros((4, 4), np.uint8), np.zeros(4, np.float32), np.full((4, 4), 1.5)])
def test_apply_threshold_rejects_bad_masks(mask):
    with pytest.raises(ValueError, match="mask"):
        apply_threshold(mask)


def test_rgba_rejects_mismatched_alpha():
    with pytest.raises(ValueError, match="alpha"):
        rgba(random_image(4, 4), np.zeros((4, 5), np.uint8))


# ---------------------------------------------------------------- loading

def test_load_from_folder(tmp_path, tiny):
    model, processor = tiny
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded, loaded_processor = load_clipseg(tmp_path, "cpu")
    assert not loaded.training
    image = random_image(20, 20, seed=5)
    np.testing.assert_allclose(segment(loaded, loaded_processor, image, "a cat"),
                               segment(model, processor, image, "a cat"), atol=1e-5)


def test_load_default_checkpoint_from_weights_dir(tmp_path, tiny):
    """The registry's file layout of CIDAS/clipseg-rd64-refined (pytorch_model.bin, preprocessor_config.json,
    vocab.json + merges.txt, ...) under DALLE_FLOW_WEIGHTS_DIR/clipseg/ is what the default name loads."""
    model, processor = tiny
    staging = tmp_path / "staging"
    model.save_pretrained(staging)
    processor.tokenizer.save_pretrained(staging)
    folder = tmp_path / "weights" / "clipseg"
    folder.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((staging / name).read_bytes())
    torch.save(load_file(staging / "model.safetensors"), folder / "pytorch_model.bin")
    tiny_image_processor().save_pretrained(folder)  # preprocessor_config.json
    vocab, merges = tiny_vocabulary()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
         "unk_token": "<|endoftext|>"}))

    folder = weights.resolve_hf_model("clipseg", weights.CLIPSEG_REPO, tmp_path / "weights")  # as the executor does
    loaded, loaded_processor = load_clipseg(folder, "cpu")
    image = random_image(16, 16, seed=6)
    np.testing.assert_allclose(segment(loaded, loaded_processor, image, "the sky"),
                               segment(model, processor, image, "the sky"), atol=1e-5)


def test_load_default_checkpoint_missing_names_files(tmp_path, monkeypatch):
    import huggingface_hub

    def not_cached(*args, **kwargs):  # a machine without the real files in its Hugging Face cache
        raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", not_cached)
    with pytest.raises(weights.MissingWeightsError, match="clipseg"):
        weights.resolve_hf_model("clipseg", weights.CLIPSEG_REPO, tmp_path)
