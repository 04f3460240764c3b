"""DALL·E Mega text pipeline: TextNormalizer, hashtag segmentation, BPE processor, and the fixture's text cases."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dalle_flow.parity.dallebart_text import TEXT_CASES, run_text_cases
from dalle_flow.models.dallebart.processor import DalleProcessor, tiny_bpe
from dalle_flow.models.dallebart.text import HashtagSegmenter, TextNormalizer
from tests.conftest import FIXTURES_ROOT

FIXTURE = FIXTURES_ROOT / "dallebart"


def _spec(folder: Path) -> dict:
    return json.loads((folder / "fixture.json").read_text())


def test_fixture_text_cases():
    results = run_text_cases(FIXTURE, _spec(FIXTURE), list(TEXT_CASES))
    assert [r.name for r in results] == list(TEXT_CASES)
    for r in results:
        assert r.ok, r.line()


def test_fixture_check_can_fail(tmp_path):
    # a copy of the folder with one altered expectation and one altered id must be reported, with the example
    for p in FIXTURE.iterdir():
        if p.is_file():
            shutil.copy(p, tmp_path / p.name)
    pairs = json.loads((tmp_path / "text_normalizer_hashtags.json").read_text())
    pairs[0][1] = " sunsetbeach"
    (tmp_path / "text_normalizer_hashtags.json").write_text(json.dumps(pairs))
    arrays = dict(np.load(tmp_path / "processor_expected.npz"))
    arrays["input_ids"][1, 3] += 1
    np.savez(tmp_path / "processor_expected.npz", **arrays)
    results = {r.name: r for r in run_text_cases(tmp_path, _spec(tmp_path), list(TEXT_CASES))}
    assert results["text_normalizer"].ok
    assert not results["text_normalizer_hashtags"].ok and "sunsetbeach" in results["text_normalizer_hashtags"].detail
    assert not results["processor"].ok and "Eiffel" in results["processor"].detail


def test_emoji_become_words():
    n = TextNormalizer(None)
    assert n("a 🐱 and a 🚀!") == " a, cat face, and a, rocket"
    # variation selector and skin-tone modifier are part of the emoji, not left-over characters
    assert n("I ❤️ NY") == " i, red heart, ny"
    assert n("ok 👍🏽") == " ok, thumbs up medium skin tone"


def test_normalizer_rules():
    n = TextNormalizer(None)
    assert n("") == " "
    assert n("Crème brûlée, 1,250,000 €!!!") == " creme brulee, 1250000 eur"
    assert n("it's 3.5/5 & 12/25") == " it's 3.5/5 & 12/25"
    assert n("<i>two</i> <PERSON> and <person> &amp;amp; http://x.y z") == " two people & z"


def test_lone_person_uses_rng():
    n = TextNormalizer(None)
    outs = {n("<person> walking", random.Random(seed)) for seed in range(20)}
    assert outs <= {" a person walking", " someone walking", " somebody walking"} and len(outs) > 1
    assert n("<person>", random.Random(5)) == n("<person>", random.Random(5))


def test_hashtag_segmenter():
    seg = HashtagSegmenter(["sunset", "beach", "sun", "set", "of", "the", "day", "photo"])
    assert seg("sunsetbeach") == "sunset beach"
    assert seg("photooftheday") == "photo of the day"
    # unknown letters fall apart; digit runs stay whole
    assert seg("xy2022") == "x y 2022"
    assert seg("cat_of") == "c a t of"
    # a repeated word keeps the cost of its last line: "sunset" becomes dearer than "sun"+"set"
    seg2 = HashtagSegmenter(["sun", "set", "sunset", "a", "b", "c", "d", "e", "f", "g", "h", "i", "sunset"])
    assert seg2("sunset") == "sun set"


def test_hashtags_in_normalizer(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("the 100\nsunset 50\nbeach 40\nnew 30\nyork 20\n")
    n = TextNormalizer(words)
    assert n("#SunsetBeach in #NewYork, #2022") == " sunset beach in new york, 2022"
    assert TextNormalizer(None)("#SunsetBeach") == " sunsetbeach"


def test_words_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        TextNormalizer(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("a 1\n\nb 2\n")
    with pytest.raises(ValueError, match=":2"):
        TextNormalizer(bad)


def test_tiny_processor_shapes_and_determinism():
    p = DalleProcessor.tiny(max_text_length=12)
    ids, mask = p(["a red car", "sunset over a lake"])
    assert ids.shape == mask.shape == (2, 12) and ids.dtype == mask.dtype == torch.long
    assert int(ids.max()) < p.vocab_size
    again, _ = DalleProcessor.tiny(max_text_length=12)(["a red car", "sunset over a lake"])
    assert torch.equal(ids, again)
    assert ids[:, 0].eq(0).all()
    for row, m in zip(ids, mask):
        n = int(m.sum())
        assert m[:n].eq(1).all() and m[n:].eq(0).all()
        assert row[n - 1] == 2 and row[n:].eq(p.pad_id).all()


def test_long_prompt_truncated():
    p = DalleProcessor.tiny(max_text_length=8)
    prompt = "a very long prompt about a red car driving over a bridge by the ocean"
    ids, mask = p([prompt])
    p.tokenizer.no_truncation()
    p.tokenizer.no_padding()
    full = p.tokenizer.encode(p.normalize([prompt])[0], add_special_tokens=False)
    assert len(full.ids) > 8
    assert ids.shape == (1, 8) and mask.eq(1).all()
    assert ids[0].tolist() == [0, *full.ids[:6], 2]
    assert torch.equal(p([prompt])[0], ids)  # the processor restores its own settings


def test_empty_prompt_and_uncond():
    p = DalleProcessor.tiny(max_text_length=6)
    ids, mask = p([""])
    space = p.tokenizer.token_to_id("Ġ")
    assert ids.tolist() == [[0, space, 2, 1, 1, 1]] and mask.tolist() == [[1, 1, 1, 0, 0, 0]]
    # the unconditional prompt is "" NOT normalised: no space token
    uids, umask = p.uncond_ids(3)
    assert uids.tolist() == [[0, 2, 1, 1, 1, 1]] * 3 and umask.tolist() == [[1, 1, 0, 0, 0, 0]] * 3
    empty_ids, empty_mask = p([])
    assert empty_ids.shape == empty_mask.shape == (0, 6)


def test_bad_inputs():
    p = DalleProcessor.tiny()
    with pytest.raises(TypeError):
        p("a single string")
    with pytest.raises(TypeError):
        p(["ok", 3])
    with pytest.raises(ValueError):
        DalleProcessor.tiny(max_text_length=0)
    with pytest.raises(ValueError):
        tiny_bpe(200)


def _write_checkpoint_tokenizer(folder: Path, max_text_length: int, with_tokenizer_json: bool) -> DalleProcessor:
    """An unseen folder in the real format: the tiny BPE as vocab.json/merges.txt (+ tokenizer.json)."""
    vocab, merges = tiny_bpe(300)
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    (folder / "config.json").write_text(json.dumps({"max_text_length": max_text_length, "normalize_text": True}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"add_prefix_space": False, "pad_token": "<pad>"}))
    tiny = DalleProcessor.tiny(max_text_length=max_text_length, vocab_size=300)
    if with_tokenizer_json:
        tiny.tokenizer.no_padding()
        tiny.tokenizer.no_truncation()
        tiny.tokenizer.save(str(folder / "tokenizer.json"))
    return tiny


PROMPTS = ["An astronaut riding a horse 🐴 on the moon", "", "#sunsetbeach, 1,000 cats' toys & a 2.5 m wall",
           "trending on artstation, a castle on a hill under a starry sky by the sea at night"]


@pytest.mark.parametrize("with_tokenizer_json", [False, True])
def test_unseen_folder_matches_transformers(tmp_path, with_tokenizer_json):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path / "ckpt"
    tiny = _write_checkpoint_tokenizer(folder, 9, with_tokenizer_json)
    words = tmp_path / "words.txt"
    words.write_text("sun 9\nset 8\nbeach 7\n")
    p = DalleProcessor.from_folder(folder, words)
    assert p.max_text_length == 9
    ids, mask = p(PROMPTS)
    ref = transformers.BartTokenizerFast.from_pretrained(str(folder))
    want = ref(p.normalize(PROMPTS), padding="max_length", truncation=True, max_length=9, return_tensors="pt")
    assert torch.equal(ids, want["input_ids"]) and torch.equal(mask, want["attention_mask"])
    uncond = ref([""], padding="max_length", truncation=True, max_length=9, return_tensors="pt")
    assert torch.equal(p.uncond_ids()[0], uncond["input_ids"])
    # same vocabulary in memory (no hashtag dictionary there, so compare hashtag-free prompts)
    plain = [t for t in PROMPTS if "#" not in t]
    assert torch.equal(tiny(plain)[0], p(plain)[0])


def test_from_folder_without_normalisation(tmp_path):
    folder = tmp_path / "ckpt"
    _write_checkpoint_tokenizer(folder, 7, with_tokenizer_json=False)
    (folder / "config.json").write_text(json.dumps({"max_text_length": 7}))  # normalize_text defaults to False
    p = DalleProcessor.from_folder(folder, None)
    assert p.normalizer is None
    ids, _ = p(["A"])
    assert ids[0, 1] == p.tokenizer.token_to_id("A")


def test_from_folder_needs_words_file_when_normalising(tmp_path):
    folder = tmp_path / "ckpt"
    _write_checkpoint_tokenizer(folder, 7, with_tokenizer_json=False)
    with pytest.raises(ValueError, match="enwiki-words-frequency"):
        DalleProcessor.from_folder(folder, None)
    with pytest.raises(FileNotFoundError):
        DalleProcessor.from_folder(folder, tmp_path / "nowhere.txt")
