"""SwinIR: parity with the reference fixture, strict loading of other configs, and the upscale pipeline API."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dalle_flow.models.swinir import (SwinIRConfig, build_swinir, derive_config, load_swinir, read_state_dict,
                                      save_swinir, tiny_swinir)
from dalle_flow.pipelines.swinir import symmetric_pad, tile_starts, upscale, upscale_tensor
from dalle_flow.models.swinir.window_attention import (WindowAttention, relative_position_index, shifted_window_mask,
                                                       window_partition)
from dalle_flow.parity import run_fixture
from tests.conftest import FIXTURES_ROOT

FIXTURE = FIXTURES_ROOT / "swinir"


def random_image(h, w, seed=0, n=None):
    shape = (h, w, 3) if n is None else (n, h, w, 3)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny():
    return tiny_swinir()


# ---------------------------------------------------------------- parity

def test_fixture_parity():
    results = run_fixture(FIXTURE)
    assert results
    failed = [r.line() for r in results if not r.ok]
    assert not failed, "\n".join(failed)
    names = {r.name for r in results}
    assert "manifest_full" in names and "realsr_pipeline/output_rgb_uint8" in names


def test_fixture_checkpoint_loads_without_config():
    spec = json.loads((FIXTURE / "fixture.json").read_text())
    model = load_swinir(FIXTURE / spec["checkpoint"])  # structure read off the tensors
    assert model.config.depths == tuple(spec["config"]["depths"])
    assert model.config.embed_dim == spec["config"]["embed_dim"]
    assert model.config.img_size == spec["config"]["img_size"]
    # the stored buffers are exactly the functions of window and img_size the code builds
    state = read_state_dict(FIXTURE / spec["checkpoint"])
    grid = spec["config"]["img_size"]
    window = spec["config"]["window_size"]
    assert torch.equal(state["layers.0.residual_group.blocks.1.attn_mask"],
                       shifted_window_mask(grid, grid, window, window // 2))
    assert torch.equal(state["layers.0.residual_group.blocks.0.attn.relative_position_index"],
                       relative_position_index(window))


def test_full_size_model_on_meta_matches_release():
    model = build_swinir(SwinIRConfig(), device="meta")
    assert sum(p.numel() for p in model.parameters()) == 28_013_059
    state = model.state_dict()
    assert len(state) == 859
    assert state["layers.8.residual_group.blocks.5.attn_mask"].shape == (64, 64, 64)
    assert "layers.8.residual_group.blocks.4.attn_mask" not in state


# ---------------------------------------------------------------- unseen configs, strict loading

VARIANT = dict(upscale=2, img_size=32, window_size=4, depths=[1, 3], embed_dim=12, num_heads=[3, 2], mlp_ratio=1.5,
               resi_connection="1conv", num_feat=8)


def variant_model(seed=1):
    torch.manual_seed(seed)
    model = build_swinir(SwinIRConfig(**VARIANT))
    model.reset_parameters()
    with torch.no_grad():  # make every tensor matter
        for name, p in model.named_parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def test_unseen_config_roundtrip(tmp_path):
    model = variant_model()
    path = tmp_path / "variant.pth"
    save_swinir(model, path, wrapper_key="params")
    loaded = load_swinir(path)  # config derived from the tensors alone
    for key in ("upscale", "img_size", "window_size", "depths", "embed_dim", "num_heads", "mlp_ratio",
                "resi_connection", "num_feat"):
        expected = VARIANT[key]
        assert getattr(loaded.config, key) == (tuple(expected) if isinstance(expected, list) else expected), key
    x = torch.rand(2, 3, 13, 18)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert loaded(x).shape == (2, 3, 26, 36)


def test_unseen_fixture_folder(tmp_path):
    """A fixture-like folder with another config and seed goes through the same parity code path."""
    model = variant_model(seed=7)
    save_swinir(model, tmp_path / "ckpt.pth")
    x = torch.rand(1, 3, 12, 20, generator=torch.Generator().manual_seed(3))
    image = random_image(11, 9, seed=4)
    with torch.no_grad():
        np.savez(tmp_path / "raw_in.npz", x=x.numpy())
        np.savez(tmp_path / "raw_out.npz", y=model(x).numpy())
    stages = upscale_tensor(model, torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
    np.savez(tmp_path / "pipe_in.npz", image_rgb_uint8=image)
    np.savez(tmp_path / "pipe_out.npz", output_rgb_uint8=upscale(model, image),
             padded_input=stages["padded_input"].numpy(), output_float=stages["output_float"].numpy())
    config = {k: v for k, v in VARIANT.items() if k != "num_feat"}
    spec = {"kind": "swinir_realsr_variant", "config": {**config, "upsampler": "nearest+conv", "in_chans": 3},
            "fixed_constants": {"num_feat": VARIANT["num_feat"]}, "checkpoint": "ckpt.pth",
            "cases": [{"name": "raw", "inputs": "raw_in.npz", "expected": "raw_out.npz", "atol": 1e-5, "rtol": 1e-5},
                      {"name": "pipe", "inputs": "pipe_in.npz", "expected": "pipe_out.npz", "atol": 1e-5,
                       "rtol": 1e-5, "uint8_key": "output_rgb_uint8"}]}
    (tmp_path / "fixture.json").write_text(json.dumps(spec))
    results = run_fixture(tmp_path)
    assert len(results) >= 6 and all(r.ok for r in results), [r.line() for r in results]
    assert stages["padded_input"].shape[-2:] == (16, 16)


def test_loading_is_strict(tmp_path):
    model = variant_model()
    state = model.state_dict()
    config = SwinIRConfig(**VARIANT)

    missing = dict(state)
    del missing["layers.1.residual_group.blocks.1.attn_mask"]
    torch.save({"params_ema": missing}, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"missing 1: .*blocks\.1\.attn_mask"):
        load_swinir(tmp_path / "missing.pth", config)

    extra = {**state, "conv_up2.weight": torch.zeros(8, 8, 3, 3)}
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match=r"unexpected 1: conv_up2"):
        load_swinir(tmp_path / "extra.pth", config)

    torch.save({"params": state}, tmp_path / "ok.pth")
    with pytest.raises(ValueError, match="wrong shape"):
        load_swinir(tmp_path / "ok.pth", SwinIRConfig(**{**VARIANT, "embed_dim": 24, "num_heads": [3, 3]}))
    with pytest.raises(ValueError, match="unknown SwinIR config keys"):
        load_swinir(tmp_path / "ok.pth", {**VARIANT, "depth": 3})


def test_params_ema_preferred_over_params(tmp_path):
    good, other = variant_model(1).state_dict(), variant_model(2).state_dict()
    torch.save({"params": other, "params_ema": good}, tmp_path / "both.pth")
    loaded = read_state_dict(tmp_path / "both.pth")
    assert torch.equal(loaded["conv_first.weight"], good["conv_first.weight"])


def test_derive_config_rejects_other_heads():
    state = variant_model().state_dict()
    del state["conv_up1.weight"]
    with pytest.raises(ValueError, match="nearest\\+conv"):
        derive_config(state)


# ---------------------------------------------------------------- attention

def test_window_attention_matches_explicit_softmax():
    torch.manual_seed(0)
    attn = WindowAttention(dim=8, window=4, num_heads=2)
    torch.nn.init.normal_(attn.relative_position_bias_table)
    batch, h, w = 3, 8, 12
    mask = shifted_window_mask(h, w, 4, 2)
    x = window_partition(torch.randn(batch, h, w, 8), 4)  # (3 * 6, 16, 8)
    got = attn(x, mask)

    q, k, v = attn.qkv(x).view(x.shape[0], 16, 3, 2, 4).permute(2, 0, 3, 1, 4)
    scores = (q * 4 ** -0.5) @ k.transpose(-2, -1)
    bias = attn.relative_position_bias_table[attn.relative_position_index.view(-1)].view(16, 16, 2).permute(2, 0, 1)
    scores = (scores + bias).view(batch, mask.shape[0], 2, 16, 16) + mask[None, :, None]
    out = (scores.view(-1, 2, 16, 16).softmax(-1) @ v).transpose(1, 2).reshape(x.shape[0], 16, 8)
    torch.testing.assert_close(got, attn.proj(out), atol=1e-5, rtol=1e-5)


def test_shift_mask_separates_wrapped_pixels():
    mask = shifted_window_mask(16, 16, 8, 4)
    assert mask.shape == (4, 64, 64)
    assert (mask[0] == 0).all()  # the top-left window has no wrapped pixels
    assert set(mask.unique().tolist()) == {0.0, -100.0}
    # last window: four regions of 16 tokens, each attending only to itself
    assert int((mask[3] == 0).sum()) == 4 * 16 * 16


# ---------------------------------------------------------------- pipeline

def test_symmetric_pad_repeats_edge_and_always_pads():
    x = torch.arange(16.0).view(1, 1, 16, 1).expand(1, 1, 16, 16)
    padded = symmetric_pad(x)
    assert padded.shape[-2:] == (24, 24)
    assert torch.equal(padded[0, 0, 16, :16], x[0, 0, 15]) and torch.equal(padded[0, 0, 23, :16], x[0, 0, 8])
    assert torch.equal(padded[0, 0, :16, 16], x[0, 0, :, 15])
    assert symmetric_pad(torch.zeros(1, 3, 3, 13)).shape[-2:] == (6, 16)  # smaller than the pad: mirror only
    assert tile_starts(40, 16, 12) == [0, 12, 24]


def test_upscale_shapes_dtype_and_determinism(tiny):
    image = random_image(19, 26)
    out = upscale(tiny, image)
    assert out.shape == (76, 104, 3) and out.dtype == np.uint8
    again = upscale(tiny_swinir(), image)  # rebuilt from the seed: same weights, same pixels
    assert np.array_equal(out, again)
    other_seed = tiny_swinir(seed=1)
    assert not torch.equal(other_seed.conv_last.weight, tiny.conv_last.weight)


def test_upscale_batch_matches_single_images(tiny):
    images = random_image(16, 24, seed=5, n=3)
    batched = upscale(tiny, images)
    assert batched.shape == (3, 64, 96, 3)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    floats = upscale_tensor(tiny, x)["output_float"]
    for i in range(3):
        # batching changes summation order only: float outputs agree closely, uint8 within one level
        torch.testing.assert_close(floats[i:i + 1], upscale_tensor(tiny, x[i:i + 1])["output_float"],
                                   atol=1e-5, rtol=1e-5)
        assert np.abs(batched[i].astype(int) - upscale(tiny, images[i]).astype(int)).max() <= 1


def test_tiled_upscale(tiny):
    image = random_image(40, 40, seed=2)
    whole = upscale(tiny, image)
    assert np.array_equal(upscale(tiny, image, tile=64), whole)  # one tile covering the padded image
    tiled = upscale(tiny, image, tile=16, tile_overlap=8)
    assert tiled.shape == whole.shape
    assert not np.array_equal(tiled, whole)  # less context per tile: documented to change results
    assert np.abs(tiled.astype(int) - whole.astype(int)).mean() < 2


def test_half_precision_runs_close(tiny):
    image = random_image(16, 16, seed=3)
    ref = upscale(tiny, image).astype(int)
    half = upscale(tiny_swinir(dtype=torch.bfloat16), image).astype(int)
    assert np.abs(half - ref).max() <= 3


@pytest.mark.parametrize("bad, message", [
    (np.zeros((16, 16, 3), np.float32), "uint8"),
    (np.zeros((16, 16), np.uint8), "shape"),
    (np.zeros((16, 16, 4), np.uint8), "3 channels"),
    (np.zeros((2, 16, 3), np.uint8), "too small"),
])
def test_upscale_rejects_bad_images(tiny, bad, message):
    with pytest.raises(ValueError, match=message):
        upscale(tiny, bad)


@pytest.mark.parametrize("tile, overlap, message", [(12, 4, "multiple of the window"), (16, 16, "tile_overlap"),
                                                    (0, 4, "tile: must be an integer >= 8"), (16, -1, "tile_overlap")])
def test_upscale_rejects_bad_tiles(tiny, tile, overlap, message):
    with pytest.raises(ValueError, match=message):
        upscale(tiny, random_image(24, 24), tile=tile, tile_overlap=overlap)
