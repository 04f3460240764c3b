"""DalleBart: fixture parity, strict loading of the Flax layout (unseen configs, fp16, unscanned, errors), KV-cached
super-conditioned sampling and the generate_tokens API."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dalle_flow.runtime.flax_msgpack import read_all
from dalle_flow.runtime.flax_msgpack_writer import write_flax_msgpack
from dalle_flow.runtime.state_dict import CheckpointMismatchError
from dalle_flow.models.dallebart.config import DalleBartConfig, tiny_config
from dalle_flow.models.dallebart.loader import flax_shapes, load_dallebart, save_dallebart, tiny_dallebart
from dalle_flow.parity.dallebart import run_fixture
from dalle_flow.models.dallebart.sampling import (SamplingSettings, generate_tokens, gumbel_noise,
                                                  supercondition_sample, warp)
from dalle_flow.pipelines.dalle_mega import DALLE_PARAMS
from tests.conftest import FIXTURES_ROOT

FIXTURE = FIXTURES_ROOT / "dallebart"
needs_fixture = pytest.mark.skipif(not (FIXTURE / "fixture.json").is_file(), reason=f"no fixture at {FIXTURE}")

SMALL = dict(image_codebook_size=40, encoder_vocab_size=300, max_text_length=12, d_model=32, layers=2, heads=4,
             image_length=24)


# the served defaults, as the DALL·E Mega pipeline passes them
SAMPLING = {name: DALLE_PARAMS.default(name) for name in ("cond_scale", "top_k", "top_p", "temperature")}


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Oracle: keep the k largest logits per row, -inf elsewhere (k = 0: unchanged)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    values, indices = logits.topk(k, dim=-1)
    return torch.full_like(logits, -math.inf).scatter_(-1, indices, values)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Oracle, HF's nucleus filter: sorted descending, keep a token while the probability mass BEFORE it is < p (the
    first token is always kept)."""
    if p >= 1.0:
        return logits
    ordered, indices = logits.sort(dim=-1, descending=True)
    cumulative = torch.softmax(ordered, dim=-1).cumsum(dim=-1)
    keep = torch.ones_like(ordered, dtype=torch.bool)
    keep[..., 1:] = cumulative[..., :-1] < p
    ordered = ordered.masked_fill(~keep, -math.inf)
    return torch.empty_like(logits).scatter_(-1, indices, ordered)


@pytest.fixture(scope="module")
def small():
    return tiny_dallebart(seed=3, **SMALL)


def prompt(model, length=None, seed=0):
    """(1, T) ids shaped like the processor's: <s> tokens </s> then padding with 1."""
    length = length or model.config.max_text_length
    g = torch.Generator().manual_seed(seed)
    body = torch.randint(4, model.config.encoder_vocab_size, (length // 2,), generator=g)
    ids = torch.ones(1, length, dtype=torch.long)
    ids[0, 0], ids[0, 1:1 + len(body)], ids[0, 1 + len(body)] = 0, body, 2
    return ids


def empty_prompt(model, length=None):
    ids = torch.ones(1, length or model.config.max_text_length, dtype=torch.long)
    ids[0, :2] = torch.tensor([0, 2])
    return ids


# ------------------------------------------------------------------------------------------------------ fixture

@needs_fixture
def test_fixture_every_case_ok():
    spec = json.loads((FIXTURE / "fixture.json").read_text())
    results = run_fixture(FIXTURE, spec)
    names = [r.name for r in results]
    assert names == [c["name"] for c in spec["cases"]] + ["manifest_full"]
    for r in results:
        assert r.ok, r.line()


# ------------------------------------------------------------------------------------------------------ loading

def _same_outputs(a, b, atol):
    ids = prompt(a)
    mask = (ids != 1).long()
    codes = list(range(a.config.image_length - 1))
    dec = torch.tensor([[a.config.decoder_start_token_id] + codes]) % a.config.num_logits
    with torch.no_grad():
        la, ea = a(ids, mask, dec)
        lb, eb = b(ids, mask, dec)
    assert torch.allclose(la.float(), lb.float(), atol=atol), (la.float() - lb.float()).abs().max()
    assert torch.allclose(ea.float(), eb.float(), atol=atol)


def test_unseen_config_round_trip_fp32_and_fp16(tmp_path):
    """A config unlike the fixture's (odd sizes, 3 heads, 1+3 layers) saved in the release layout reloads strictly."""
    config = DalleBartConfig(d_model=48, encoder_layers=1, decoder_layers=3, encoder_attention_heads=3,
                             decoder_attention_heads=3, encoder_ffn_dim=40, decoder_ffn_dim=56, encoder_vocab_size=77,
                             image_vocab_size=25, max_text_length=9, image_length=11, decoder_start_token_id=20,
                             bos_token_id=21, eos_token_id=21, pad_token_id=21)
    from dalle_flow.models.dallebart.loader import randomize_
    from dalle_flow.models.dallebart.model import DalleBart
    model = randomize_(DalleBart(config), seed=7).eval()
    save_dallebart(model, tmp_path / "f32")
    save_dallebart(model, tmp_path / "f16", dtype=np.float16)
    leaves = read_all(tmp_path / "f32" / "flax_model.msgpack")
    assert {k: v.shape for k, v in leaves.items()} == flax_shapes(model)
    assert leaves["model/decoder/layers/FlaxBartDecoderLayers/GLU_0/Dense_0/kernel"].shape == (3, 48, 56)
    assert "model/encoder/layers/FlaxBartEncoderLayers/LayerNorm_0/scale" not in leaves  # bias-only norm
    assert read_all(tmp_path / "f16" / "flax_model.msgpack")["lm_head/kernel"].dtype == np.float16

    reloaded = load_dallebart(tmp_path / "f32")
    assert reloaded.config == config
    for (name, p), (_, q) in zip(model.named_parameters(), reloaded.named_parameters()):
        assert torch.equal(p, q), name
    _same_outputs(model, reloaded, atol=0)
    _same_outputs(model.half().float(), load_dallebart(tmp_path / "f16"), atol=1e-6)  # fp16 file, fp32 model
    bf16 = load_dallebart((tmp_path / "f16" / "config.json", tmp_path / "f16" / "flax_model.msgpack"),
                          dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16 and not any(p.requires_grad for p in bf16.parameters())


def _rewrite(src: Path, dst: Path, change):
    """Copy a checkpoint folder, passing its leaves through `change(dict) -> dict`."""
    dst.mkdir()
    (dst / "config.json").write_text((src / "config.json").read_text())
    leaves = change(read_all(src / "flax_model.msgpack"))
    write_flax_msgpack(dst / "flax_model.msgpack", [(tuple(k.split("/")), v) for k, v in leaves.items()])
    return dst


def test_unscanned_layout_and_params_prefix(tmp_path, small):
    """dalle-mini's unscan() spelling (FlaxBart*Layer_<i>, no layer axis) under a `params` level loads the same."""
    save_dallebart(small, tmp_path / "scanned")

    def unscan(leaves):
        out = {}
        for key, value in leaves.items():
            for stack in ("Encoder", "Decoder"):
                marker = f"FlaxBart{stack}Layers/"
                if marker in key:
                    for i in range(value.shape[0]):
                        out["params/" + key.replace(marker, f"FlaxBart{stack}Layer_{i}/")] = value[i]
                    break
            else:
                out["params/" + key] = value
        return out

    folder = _rewrite(tmp_path / "scanned", tmp_path / "unscanned", unscan)
    _same_outputs(small, load_dallebart(folder), atol=0)


@pytest.mark.parametrize("change, message", [
    (lambda d: {k: v for k, v in d.items() if not k.endswith("GLU_0/Dense_1/kernel") or "decoder" not in k},
     "missing"),
    (lambda d: {**d, "model/encoder/extra/kernel": np.zeros((2, 2), np.float32)}, "unexpected"),
    (lambda d: {**d, "lm_head/kernel": np.zeros((3, 3), np.float32)}, "mismatches"),
    (lambda d: {**d, "model/encoder/final_ln/scale": np.ones(32, np.float32)}, "unexpected"),
])
def test_loading_is_strict(tmp_path, small, change, message):
    save_dallebart(small, tmp_path / "good")
    folder = _rewrite(tmp_path / "good", tmp_path / "bad", change)
    with pytest.raises(CheckpointMismatchError, match=message):
        load_dallebart(folder)


def test_streaming_writer_and_chunked_leaves_round_trip(tmp_path):
    """Our writer's files read back exactly; flax's split form of >1 GiB leaves is joined by the reader."""
    import msgpack

    arrays = {"a/b/kernel": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "a/c": np.ones(5, np.float16),
              "z": np.array(3.5, np.float32)}
    write_flax_msgpack(tmp_path / "w.msgpack", [(tuple(k.split("/")), (lambda v=v: v)) for k, v in arrays.items()])
    back = read_all(tmp_path / "w.msgpack")
    assert back.keys() == arrays.keys()
    for key, value in arrays.items():
        assert back[key].dtype == value.dtype and np.array_equal(back[key], value)

    def ext(a):
        return msgpack.ExtType(1, msgpack.packb([list(a.shape), a.dtype.name, a.tobytes()]))

    flat = np.arange(10, dtype=np.float32)
    split = {"__msgpack_chunked_array__": True, "shape": {"0": 2, "1": 5},
             "chunks": {"0": ext(flat[:4]), "1": ext(flat[4:8]), "2": ext(flat[8:])}}
    (tmp_path / "c.msgpack").write_bytes(msgpack.packb({"m": {"big": split, "small": ext(flat[:2])}}))
    back = read_all(tmp_path / "c.msgpack")
    assert np.array_equal(back["m/big"], flat.reshape(2, 5)) and np.array_equal(back["m/small"], flat[:2])


def test_missing_files_and_unsupported_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_dallebart(tmp_path)
    raw = tiny_config().to_dict()
    with pytest.raises(ValueError, match="use_glu"):
        DalleBartConfig.from_dict({**raw, "use_glu": False})
    with pytest.raises(ValueError, match="lacks"):
        DalleBartConfig.from_dict({k: v for k, v in raw.items() if k != "image_length"})


# ----------------------------------------------------------------------------------------------------- sampling

def test_warp_equals_reference_filters():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 300, generator=g) * 3
    for top_k, top_p, temperature in ((50, 0.9, 1.0), (0, 0.5, 0.7), (7, 1.0, 1.3), (300, 0.95, 1.0)):
        settings = SamplingSettings(1.0, top_k, top_p, temperature).resolved()
        after_k, warped = warp(logits, settings, want_top_k=True)
        ref_k = top_k_filter(logits / temperature, top_k)
        assert torch.equal(after_k, ref_k)
        assert torch.equal(torch.isinf(warped), torch.isinf(top_p_filter(ref_k, top_p)))
        kept = ~torch.isinf(warped)
        assert torch.allclose(warped[kept], ref_k[kept])


def test_top_p_keeps_tokens_while_mass_before_is_below_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert (~torch.isinf(top_p_filter(logits, 0.6))).sum() == 2  # mass before: 0, 0.5 (< 0.6), 0.8
    assert (~torch.isinf(top_p_filter(logits, 0.5))).sum() == 1  # 0.5 is not < 0.5
    assert (~torch.isinf(top_p_filter(logits, 0.81))).sum() == 3


def test_gumbel_argmax_samples_the_softmax():
    probs = torch.tensor([0.6, 0.3, 0.1])
    g = torch.Generator().manual_seed(0)
    picks = (probs.log() + gumbel_noise((20000, 3), g, "cpu")).argmax(-1)
    freq = torch.bincount(picks, minlength=3).float() / 20000
    assert torch.allclose(freq, probs, atol=0.015), freq


def test_cached_sampling_matches_teacher_forcing(small):
    """The KV-cached, cond+uncond-batched, prompt-grouped decoder gives the logits of a full forward pass."""
    texts = torch.cat([prompt(small, seed=1), prompt(small, seed=2)])
    unconds = torch.cat([empty_prompt(small)] * 2)
    record = {}
    g = torch.Generator().manual_seed(0)
    steps = small.config.image_length
    sequences = supercondition_sample(
        small, texts, (texts != 1).long(), unconds, (unconds != 1).long(), SamplingSettings(4.0, 10, 0.95, 1.0),
        noise=lambda step, rows, vocab: gumbel_noise((rows, vocab), g, "cpu"), images_per_prompt=3,
        codebook_size=small.config.image_codebook_size, record=record)
    assert sequences.shape == (6, steps + 1)
    assert (sequences[:, 1:] < small.config.image_codebook_size).all()
    rows = texts.repeat_interleave(3, 0)
    with torch.no_grad():
        cond, _ = small(rows, (rows != 1).long(), sequences[:, :-1])
        uncond, _ = small(unconds.repeat_interleave(3, 0), (unconds.repeat_interleave(3, 0) != 1).long(),
                          sequences[:, :-1])
    assert torch.allclose(torch.stack(record["logits_cond"], 1), cond, atol=1e-4)
    assert torch.allclose(torch.stack(record["logits_uncond"], 1), uncond, atol=1e-4)
    guided = torch.stack(record["logits_guided"], 1)
    finite = ~torch.isinf(guided)
    assert torch.allclose(guided[finite], (uncond + 4.0 * (cond - uncond))[finite], atol=1e-3)


def test_generate_tokens_shapes_determinism_and_seed_derivation(small):
    text, empty = prompt(small), empty_prompt(small)
    a = generate_tokens(small, text, empty, num_images=5, seed=11, batch_size=2, **SAMPLING)
    assert a.shape == (5, small.config.image_length) and a.dtype == torch.long
    assert 0 <= int(a.min()) and int(a.max()) < small.config.image_codebook_size
    assert torch.equal(a, generate_tokens(small, text, empty, num_images=5, seed=11, batch_size=2, **SAMPLING))
    assert not torch.equal(a, generate_tokens(small, text, empty, num_images=5, seed=12, batch_size=2, **SAMPLING))
    # image k depends on (seed, batch_size, k), not on how many images were asked for
    assert torch.equal(a[:3], generate_tokens(small, text, empty, num_images=3, seed=11, batch_size=2, **SAMPLING))
    # a shorter unconditional input (padded internally) and explicit masks give the same result
    same = generate_tokens(small, text, empty[:, :4], num_images=5, seed=11, batch_size=2,
                           text_mask=(text != 1).long(), **SAMPLING)
    assert torch.equal(a, same)
    restricted = generate_tokens(small, text, empty, num_images=2, seed=0, codebook_size=5,
                                 **{**SAMPLING, "top_k": 0, "top_p": None}, batch_size=16)
    assert int(restricted.max()) < 5
    unguided = generate_tokens(small, text, None, num_images=2, seed=0, **{**SAMPLING, "cond_scale": 1.0},
                               batch_size=16)
    assert unguided.shape == (2, small.config.image_length)


def test_non_code_ids_are_masked(small):
    """A model that strongly prefers the special ids: the reference path samples them, generate_tokens never does."""
    biased = tiny_dallebart(seed=3, **SMALL)
    codebook = biased.config.image_codebook_size
    with torch.no_grad():  # feature 0 of the final hidden state becomes ~100 and only the special ids read it
        biased.decoder.final_ln.bias[0] = 100.0
        biased.lm_head.kernel[0, :codebook] = 0.0
        biased.lm_head.kernel[0, codebook:] = 1.0
    text, empty = prompt(biased), empty_prompt(biased)
    g = torch.Generator().manual_seed(0)
    raw = supercondition_sample(biased, text, (text != 1).long(), empty, (empty != 1).long(),
                                SamplingSettings(1.0, 0, 1.0, 1.0),
                                noise=lambda s, rows, vocab: gumbel_noise((rows, vocab), g, "cpu"), steps=6)
    assert (raw[:, 1:] >= codebook).any()  # dalle-mini's behaviour: specials are sampled (then EOS -> pad)
    codes = generate_tokens(biased, text, empty, num_images=3, seed=0, cond_scale=1.0, top_k=0, top_p=None,
                            temperature=1.0, batch_size=16)
    assert int(codes.max()) < codebook


@pytest.mark.parametrize("kwargs, message", [
    (dict(codebook_size=10 ** 6), "codebook_size"), (dict(uncond_ids=None), "uncond_ids"),
    (dict(text_ids=torch.ones(2, 5, dtype=torch.long)), "text_ids"),
    (dict(text_ids=torch.full((1, 5), 10 ** 6)), "text_ids"), (dict(text_ids=torch.ones(1, 99, dtype=torch.long)),
                                                               "length"),
])
def test_generate_tokens_rejects_bad_arguments(small, kwargs, message):
    args = dict(model=small, text_ids=prompt(small), uncond_ids=empty_prompt(small), num_images=1, seed=0,
                batch_size=16, **SAMPLING)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        generate_tokens(**args)


def test_tiny_dallebart_is_deterministic_with_real_conventions():
    a, b = tiny_dallebart(), tiny_dallebart()
    c = a.config
    assert c.image_length == 256 and c.image_codebook_size == 64 and c.decoder_start_token_id == 64
    assert c.eos_token_id == c.pad_token_id == 65 and c.num_logits == 96
    real = tiny_config(image_codebook_size=16384)
    assert (real.decoder_start_token_id, real.eos_token_id, real.num_logits) == (16384, 16385, 16416)
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), name
    assert not torch.equal(a.lm_head.kernel, tiny_dallebart(seed=1).lm_head.kernel)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_images=0), "num_images: must be an integer between 1 and 32, got 0"),
    (dict(seed=-1), "seed: must be an integer between 0 and"), (dict(top_p=0.0), "top_p: must be a number between"),
    (dict(temperature=0.0), "temperature"), (dict(top_k=0), "top_k: must be an integer between 1 and 16384"),
    (dict(cond_scale=math.inf), "cond_scale"),
])
def test_the_pipeline_checks_its_arguments_with_the_request_declaration(kwargs, message):
    from dalle_flow.pipelines.dalle_mega import DalleMegaPipeline

    args = {"prompt": "a cat", "num_images": 1, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        DalleMegaPipeline.tiny().generate(**args)
