"""VQGAN: parity with the vqgan-jax fixture, strict loading of unseen configs, and the decode API."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dalle_flow.runtime import flax_msgpack
from dalle_flow.runtime.flax_msgpack_writer import write_flax_msgpack
from dalle_flow.runtime.state_dict import CheckpointMismatchError
from dalle_flow.models.vqgan import (VQGAN, VQGANConfig, load_vqgan, postprocess, save_vqgan,
                                     tiny_vqgan)
from dalle_flow.models.vqgan.loader import CHECKPOINT_NAME, CONFIG_NAME, build_empty, flax_layout
from dalle_flow.parity import run_fixture
from dalle_flow.parity.compare import read_manifest
from tests.conftest import FIXTURES_ROOT

VQGAN_FIXTURE = FIXTURES_ROOT / "vqgan"

# differs from the fixture in every size; resolution 90 makes the encoder's nominal resolutions (90, 45, 22) differ
# from the decoder's (22, 44, 88), so attention at 45 exists in the encoder only
UNSEEN = VQGANConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, resolution=90, attn_resolutions=(45,),
                     z_channels=8, embed_dim=4, n_embed=10, double_z=True)
NO_RESAMPLE_CONV = VQGANConfig(ch=32, ch_mult=(1, 1), num_res_blocks=1, resolution=8, attn_resolutions=(8,),
                               z_channels=4, embed_dim=4, n_embed=7, resamp_with_conv=False)


def randomised(config: VQGANConfig, seed: int = 0) -> VQGAN:
    """Every parameter random (GroupNorm scale/bias and biases included) so a swapped tensor changes the output."""
    generator = torch.Generator().manual_seed(seed)
    model = VQGAN(config)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def tiny():
    return tiny_vqgan()


def test_fixture_all_cases_ok():
    assert (VQGAN_FIXTURE / "fixture.json").is_file(), f"fixture folder missing: {VQGAN_FIXTURE}"
    results = run_fixture(VQGAN_FIXTURE)
    failed = [r.line() for r in results if not r.ok]
    assert not failed, failed
    spec = json.loads((VQGAN_FIXTURE / "fixture.json").read_text())
    names = {r.name.split("/")[0] for r in results}
    assert {case["name"] for case in spec["cases"]} <= names
    if read_manifest(VQGAN_FIXTURE) is not None:
        assert "manifest_full" in names


def test_default_config_is_the_real_model():
    manifest = read_manifest(VQGAN_FIXTURE)
    if manifest is None:
        pytest.skip("no manifest_full.json in the fixture folder")
    assert VQGANConfig.from_dict(manifest["config"]) == VQGANConfig()
    model = build_empty(VQGANConfig(), device="meta")
    assert sum(p.numel() for p in model.parameters()) == manifest["num_params"]


@pytest.mark.parametrize("config", [UNSEEN, NO_RESAMPLE_CONV], ids=["unseen", "no_resample_conv"])
def test_unseen_config_roundtrip(tmp_path, config):
    model = randomised(config, seed=3)
    save_vqgan(model, tmp_path)
    stored = flax_msgpack.read_all(tmp_path / CHECKPOINT_NAME)
    # the file is in the Flax layout, independently of the loader's mapping
    weight = model.decoder.up[0].block[0].conv1.weight.detach().numpy()
    np.testing.assert_array_equal(stored["decoder/up_0/block_0/conv1/kernel"], weight.transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(stored["quantize/embedding/embedding"], model.quantize.embedding.weight.detach())
    assert len(stored) == sum(1 for _ in model.parameters())
    if config is UNSEEN:
        assert "encoder/down_1/attn_0/q/kernel" in stored
        assert not any(k.startswith("decoder/up_1/attn") for k in stored)
        assert stored["quant_conv/kernel"].shape == (1, 1, 2 * config.z_channels, config.embed_dim)
    else:
        assert not any("sample" in k for k in stored)
    assert json.loads((tmp_path / CONFIG_NAME).read_text())["architectures"] == ["del"]

    loaded = load_vqgan(tmp_path)
    assert loaded.config == config
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    f = config.downsample_factor
    pixels = torch.rand(2, 3, 2 * f, 2 * f, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        quant, ids = loaded.encode(pixels)
        assert quant.shape == (2, config.embed_dim, 2, 2) and ids.shape == (2, 4)
        assert int(ids.max()) < config.n_embed
        images = loaded.decode_code(ids)
        assert images.shape == (2, config.out_ch, 2 * f, 2 * f) and images.dtype == torch.float32
        assert torch.allclose(images, loaded.decode(quant))
        assert torch.equal(images, model.decode_code(ids))


def _write_variant(folder: Path, source: Path, edit) -> Path:
    folder.mkdir()
    tensors = flax_msgpack.read_all(source / CHECKPOINT_NAME)
    edit(tensors)
    write_flax_msgpack(folder / CHECKPOINT_NAME, ((tuple(k.split("/")), v) for k, v in tensors.items()))
    (folder / CONFIG_NAME).write_text((source / CONFIG_NAME).read_text())
    return folder


@pytest.fixture(scope="module")
def saved_unseen(tmp_path_factory):
    return save_vqgan(randomised(UNSEEN), tmp_path_factory.mktemp("unseen"))


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.pop("decoder/mid/attn_1/proj_out/bias"), "missing 1: decoder/mid/attn_1/proj_out/bias"),
    (lambda t: t.update({"decoder/up_0/attn_0/q/bias": np.zeros(32, np.float32)}),
     "unexpected 1: decoder/up_0/attn_0/q/bias"),
    (lambda t: t.update({"quantize/embedding/embedding": np.zeros((11, 4), np.float32)}),
     "wrong shape 1: quantize/embedding/embedding"),
    (lambda t: t.update({"encoder/conv_in/kernel": t["encoder/conv_in/kernel"].transpose(3, 2, 0, 1).copy()}),
     "wrong shape 1: encoder/conv_in/kernel"),
])
def test_strict_loading_errors(tmp_path, saved_unseen, edit, message):
    folder = _write_variant(tmp_path / "variant", saved_unseen, edit)
    with pytest.raises(CheckpointMismatchError, match=message):
        load_vqgan(folder)


def test_old_flax_groupnorm_shape_is_accepted(tmp_path, saved_unseen):
    def to_4d(tensors):
        tensors["decoder/norm_out/scale"] = tensors["decoder/norm_out/scale"].reshape(1, 1, 1, -1)
    folder = _write_variant(tmp_path / "variant", saved_unseen, to_4d)
    reference = load_vqgan(saved_unseen)
    assert torch.equal(load_vqgan(folder).decoder.norm_out.weight, reference.decoder.norm_out.weight)


def test_config_and_files_errors(tmp_path, saved_unseen):
    with pytest.raises(FileNotFoundError, match="flax_model.msgpack"):
        load_vqgan(tmp_path)
    config = json.loads((saved_unseen / CONFIG_NAME).read_text())
    folder = tmp_path / "other_config"
    folder.mkdir()
    (folder / CHECKPOINT_NAME).write_bytes((saved_unseen / CHECKPOINT_NAME).read_bytes())
    (folder / CONFIG_NAME).write_text(json.dumps({**config, "n_embed": 12}))
    with pytest.raises(CheckpointMismatchError, match="quantize/embedding/embedding"):
        load_vqgan(folder)
    with pytest.raises(ValueError, match="num_resolutions"):
        VQGANConfig.from_dict({**config, "num_resolutions": 5})
    with pytest.raises(ValueError, match="multiples of 32"):
        VQGANConfig(ch=48)


def test_decode_only_load_skips_the_encoder_and_decodes_the_same(saved_unseen):
    """Serving (DalleMegaPipeline.from_files) loads the VQGAN without its encoder: fewer parameters, same pixels."""
    full = load_vqgan(saved_unseen)
    decoder_only = load_vqgan(saved_unseen, with_encoder=False)
    assert not hasattr(decoder_only, "encoder") and not hasattr(decoder_only, "quant_conv")
    removed = sum(p.numel() for name in ("encoder", "quant_conv") for p in getattr(full, name).parameters())
    assert sum(p.numel() for p in decoder_only.parameters()) == sum(p.numel() for p in full.parameters()) - removed
    ids = torch.tensor([[0, 3, 9, 1]])
    with torch.inference_mode():
        assert torch.equal(decoder_only.decode_code(ids), full.decode_code(ids))
    with pytest.raises(RuntimeError, match="without its encoder"):
        decoder_only.encode(torch.zeros(1, 3, 32, 32))


def test_half_precision_weights_decode_to_float32(saved_unseen):
    full = load_vqgan(saved_unseen)
    half = load_vqgan(saved_unseen, dtype=torch.bfloat16)
    assert half.quant_conv.weight.dtype == torch.bfloat16
    ids = torch.tensor([[0, 3, 9, 1]])
    with torch.inference_mode():
        a, b = full.decode_code(ids), half.decode_code(ids)
    assert b.dtype == torch.float32 and b.shape == a.shape
    assert (a - b).abs().max() < 0.1 * a.abs().max()


def test_tiny_decodes_16x16_codes_to_256_pixels(tiny):
    ids = torch.randint(0, 64, (2, 256), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        images = tiny.decode_code(ids)
        again = tiny.decode_code(ids[:1])
    assert images.shape == (2, 3, 256, 256) and images.dtype == torch.float32
    assert torch.allclose(images[:1], again, atol=1e-4)  # batch rows are independent (up to float noise)
    assert not torch.equal(images[0], images[1])
    pixels = postprocess(images)
    assert pixels.shape == (2, 256, 256, 3) and pixels.dtype == np.uint8
    assert pixels.std() > 0


def test_tiny_is_deterministic_and_leaves_global_rng_alone(tiny):
    state = torch.random.get_rng_state()
    other = tiny_vqgan()
    assert torch.equal(state, torch.random.get_rng_state())
    for (name, a), (_, b) in zip(tiny.state_dict().items(), other.state_dict().items()):
        assert torch.equal(a, b), name
    assert tiny_vqgan(n_embed=100).quantize.embedding.weight.shape[0] == 100
    assert not torch.equal(tiny_vqgan(seed=1).decoder.conv_in.weight, tiny.decoder.conv_in.weight)


def test_decode_code_rejects_bad_ids(tiny):
    with pytest.raises(ValueError, match="perfect square"):
        tiny.decode_code(torch.zeros(1, 255, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        tiny.decode_code(torch.full((1, 4), 64))
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        tiny.decode_code(torch.full((1, 4), -1))
    with pytest.raises(ValueError, match="integers"):
        tiny.decode_code(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="batch, tokens"):
        tiny.decode_code(torch.zeros(4, dtype=torch.long))


def test_decode_code_is_raster_order(tiny):
    """Token t sits at row t // s, column t % s of the latent grid."""
    ids = torch.arange(16).reshape(1, 16) % 64
    latents = tiny.quantize.lookup(ids)
    rows = tiny.quantize.embedding.weight
    assert torch.equal(latents[0, :, 1, 2], rows[6])
    assert torch.equal(latents[0, :, 3, 0], rows[12])


def test_quantizer_picks_nearest_row_first_on_ties(tiny):
    codebook = tiny.quantize.embedding.weight.detach()
    z = torch.stack([codebook[5], codebook[17] + 1e-3, codebook[40]]).t().reshape(1, -1, 1, 3)
    quant, ids = tiny.quantize(z)
    assert ids.tolist() == [[5, 17, 40]]
    assert torch.equal(quant[0, :, 0, 0], codebook[5])
    tie = VQGAN(NO_RESAMPLE_CONV).quantize
    with torch.no_grad():
        tie.embedding.weight.zero_()
    assert tie(torch.ones(1, NO_RESAMPLE_CONV.embed_dim, 1, 1))[1].tolist() == [[0]]


def test_postprocess_clips_and_truncates():
    values = torch.tensor([-0.5, 0.0, 0.5, 0.999, 1.0, 2.0], dtype=torch.float32)
    images = values.reshape(1, 1, 1, 6).expand(1, 3, 1, 6)
    out = postprocess(images)
    assert out.shape == (1, 1, 6, 3) and out.dtype == np.uint8
    expected = np.asarray(np.clip(values.numpy(), 0.0, 1.0) * 255, dtype=np.uint8)
    assert out[0, 0, :, 0].tolist() == expected.tolist() == [0, 0, 127, 254, 255, 255]


def test_flax_layout_of_real_config_matches_naming():
    layout = flax_layout(build_empty(VQGANConfig(), device="meta"))
    assert layout["decoder/up_4/attn_2/norm/scale"] == ("decoder.up.4.attn.2.norm.weight", (512,))
    assert layout["encoder/down_0/downsample/conv/kernel"][1] == (3, 3, 128, 128)
    assert layout["decoder/up_1/upsample/conv/kernel"][0] == "decoder.up.1.upsample.conv.weight"
    assert "decoder/up_0/upsample/conv/kernel" not in layout and "encoder/down_4/downsample/conv/kernel" not in layout
