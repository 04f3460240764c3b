"""GLID-3 XL UNet, guidance, PLMS sampler and pipeline.

Parity with the reference runs through the repository's fixture folder; the rest checks the loader on configurations the
fixture does not have, the sampler against a float64 transcription of its formulas, and the pipeline API.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from dalle_flow.models.glid3.guidance import guided_model_fn
from dalle_flow.pipelines.glid3 import Glid3Pipeline
from dalle_flow.models.glid3.plms import MIN_SAMPLING_STEPS, PlmsSampler, initial_latents
from dalle_flow.models.glid3.schedule import SpacedSchedule, space_timesteps
from dalle_flow.models.glid3.config import FINETUNE_CONFIG, UNetConfig
from dalle_flow.models.glid3.loader import load_unet, tiny_unet, unet_from_state_dict
from dalle_flow.models.glid3.unet import UNet
from dalle_flow.parity import run_fixture
from tests.conftest import FIXTURES_ROOT

GLID3_FIXTURE = FIXTURES_ROOT / "glid3"



# -- parity -----------------------------------------------------------------------------------------------------------

def test_fixture_every_case_ok():
    assert (GLID3_FIXTURE / "fixture.json").is_file(), f"fixture folder missing: {GLID3_FIXTURE}"
    results = run_fixture(GLID3_FIXTURE)
    names = {r.name.split(".")[0] for r in results}
    assert {"unet_forward", "unet_forward_noclip", "cfg_model_fn", "sample_plms", "sample_plms_init",
            "manifest_full", "manifest_full+optional"} <= names
    bad = [r.line() for r in results if not r.ok]
    assert not bad, "\n".join(bad)


# -- loader on unseen configurations ----------------------------------------------------------------------------------

VARIANT_PARAMS = {  # reference terms, deliberately unlike the fixture: 2 levels, 2 res blocks, attention at ds 2 only
    "image_size": 32, "num_channels": 32, "num_res_blocks": 2, "num_heads": 4, "attention_resolutions": "16",
    "channel_mult": "1,2", "context_dim": 12, "clip_embed_dim": 6, "use_spatial_transformer": True,
    "use_scale_shift_norm": False, "resblock_updown": False, "class_cond": False,
}


def _random_model(config: UNetConfig, seed: int) -> UNet:
    torch.manual_seed(seed)
    model = UNet(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # randomise everything, norms included, so every tensor matters
            p.copy_(torch.randn_like(p) * 0.2)
    return model


def _inputs(config: UNetConfig, n=2, side=8):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(n, config.in_channels, side, side, generator=g)
    ctx = torch.randn(n, 77, config.context_dim, generator=g)
    return x, torch.tensor([999.0, 3.5][:n]), ctx


@pytest.mark.parametrize("with_clip", [True, False])
def test_variant_roundtrip_through_real_format(tmp_path, with_clip):
    config = UNetConfig.from_reference(VARIANT_PARAMS)
    if not with_clip:
        config = replace(config, clip_embed_dim=None)
    model = _random_model(config, seed=11)
    path = tmp_path / "finetune.pt"
    torch.save(model.state_dict(), path)

    # the file decides CLIP conditioning, whatever the configuration says
    loaded = load_unet(path, replace(config, clip_embed_dim=None if with_clip else 99))
    assert loaded.config.clip_embed_dim == (6 if with_clip else None)
    x, t, ctx = _inputs(config)
    clip = torch.randn(2, 6) if with_clip else None
    with torch.no_grad():
        assert torch.equal(loaded(x, t, ctx, clip_embed=clip), model(x, t, ctx, clip_embed=clip))
        if with_clip:  # the CLIP embedding really enters
            assert not torch.allclose(loaded(x, t, ctx, clip_embed=clip), loaded(x, t, ctx, clip_embed=clip + 1))


def test_image_condition_detected_from_input_channels():
    config = replace(UNetConfig.from_reference(VARIANT_PARAMS), image_condition=True, clip_embed_dim=None)
    model = _random_model(config, seed=3)
    loaded = unet_from_state_dict(model.state_dict(), replace(config, image_condition=False))
    assert loaded.config.image_condition
    x, t, ctx = _inputs(config)
    with torch.no_grad():
        assert torch.equal(loaded(x, t, ctx), model(x, t, ctx, image_embed=torch.zeros_like(x)))


def test_strict_loading_names_the_problem():
    config = replace(UNetConfig.from_reference(VARIANT_PARAMS), clip_embed_dim=None)
    sd = _random_model(config, seed=1).state_dict()
    missing = {k: v for k, v in sd.items() if k != "out.2.bias"}
    with pytest.raises(ValueError, match="missing 1: out.2.bias"):
        unet_from_state_dict(missing, config)
    with pytest.raises(ValueError, match="unexpected 1: extra.weight"):
        unet_from_state_dict({**sd, "extra.weight": torch.zeros(1)}, config)
    wrong = dict(sd, **{"time_embed.0.weight": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="wrong shape 1: time_embed.0.weight"):
        unet_from_state_dict(wrong, config)
    with pytest.raises(ValueError, match="super-resolution"):
        unet_from_state_dict({**sd, "external_block.0.0.weight": torch.zeros(1)}, config)
    with pytest.raises(ValueError, match="use_scale_shift_norm"):
        UNetConfig.from_reference({**VARIANT_PARAMS, "use_scale_shift_norm": True})


def test_full_size_config_matches_dalle_flow():
    c = FINETUNE_CONFIG
    assert (c.model_channels, c.channel_mult, c.num_res_blocks, c.attention_ds, c.context_dim) == \
        (320, (1, 2, 4, 4), 2, (1, 2, 4), 1280)
    with torch.device("meta"):
        n = sum(p.numel() for p in UNet(c).parameters())
    assert n == 872_300_484  # manifest_full.json, without clip_proj


def test_tiny_unet_deterministic_and_half_precision_runs():
    a, b = tiny_unet(seed=0), tiny_unet(seed=0)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    assert not torch.equal(tiny_unet(seed=1).out[2].weight, a.out[2].weight)
    x, t, ctx = _inputs(a.config, side=32)
    with torch.no_grad():
        ref = a(x, t, ctx)
        low = tiny_unet(seed=0, dtype=torch.bfloat16)(x, t, ctx)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    assert torch.corrcoef(torch.stack([ref.flatten(), low.flatten()]))[0, 1] > 0.99


# -- schedule and sampler ---------------------------------------------------------------------------------------------

def test_respacing_rounds_accumulated_float():
    kept = space_timesteps(1000, "100")
    assert len(kept) == 100 and kept[:7] == [0, 10, 20, 30, 40, 50, 61] and kept[-1] == 999
    assert space_timesteps(1000, "12") == [0, 91, 182, 272, 363, 454, 545, 636, 727, 817, 908, 999]
    s = SpacedSchedule.create(12)
    # t = -0.5 interpolates backwards past the start: negative alpha_bar, hence the refusal of too few steps
    assert s.alpha_bar(torch.tensor([-0.5]))[0] < 0
    assert s.model_timesteps(torch.tensor([10.5]))[0] == pytest.approx((908 + 999) / 2)


def _reference_plms(schedule, model_fn, x, start):
    """Float64 transcription of the PRK + PLMS formulas (fixture README), for comparison."""
    acp, tmap = schedule.alphas_cumprod, schedule.timestep_map.astype(np.float64)

    def lerp(table, t):
        lo, hi = table[int(np.floor(t))], table[int(np.ceil(t))]
        return lo + (t - np.trunc(t)) * (hi - lo)

    def x0(x, e, t):
        return (x - e * np.sqrt(1 - lerp(acp, t))) / np.sqrt(lerp(acp, t))

    def tr(x, e, t1, t2):
        return x0(x, e, t1) * np.sqrt(lerp(acp, t2)) + np.sqrt(1 - lerp(acp, t2)) * e

    def eps(x, t):
        return model_fn(x, lerp(tmap, t))

    hist, out = [], None
    for t in range(start, -1, -1):
        if len(hist) < 3:
            e1 = eps(x, t)
            e2 = eps(tr(x, e1, t, t - .5), t - .5)
            e3 = eps(tr(x, e2, t, t - .5), t - .5)
            e4 = eps(tr(x, e3, t, t - 1), t - 1)
            e = (e1 + 2 * e2 + 2 * e3 + e4) / 6
            out, keep = x0(x, e, t), e
        else:
            e = eps(x, t)
            keep, out = e, x0(x, e, t)
            e = (55 * e - 59 * hist[-1] + 37 * hist[-2] - 9 * hist[-3]) / 24
            hist.pop(0)
        hist.append(keep)
        x = tr(x, e, t, t - 1)
    return out


@pytest.mark.parametrize("steps,start", [(7, 6), (20, 9), (5, 3)])
def test_sampler_matches_float64_transcription(steps, start):
    schedule = SpacedSchedule.create(steps)
    x = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(steps))

    def analytic(x, t):  # any smooth function of x and the timestep will do
        return 0.3 * x + 0.1 * np.sin(x * 2) + t / 1000.0

    calls = []

    def model_fn(x, t):
        calls.append(float(t[0]))
        return torch.as_tensor(analytic(x.double().numpy(), t.double().numpy()[:, None, None, None])).float()

    got = PlmsSampler(schedule).sample(model_fn, x, start)
    want = _reference_plms(schedule, lambda x, t: analytic(x, t), x.double().numpy(), start)
    np.testing.assert_allclose(got.numpy(), want, atol=2e-4, rtol=1e-4)
    assert len(calls) == 4 * 3 + (start + 1 - 3)


def test_sampler_refuses_too_few_steps_instead_of_nan():
    schedule = SpacedSchedule.create(10)
    sampler = PlmsSampler(schedule)
    x = torch.randn(2, 4, 2, 2)
    finite = sampler.sample(lambda x, t: 0.5 * x, x, start_index=MIN_SAMPLING_STEPS - 1)
    assert torch.isfinite(finite).all()
    with pytest.raises(ValueError, match="at least 4 steps"):
        sampler.sample(lambda x, t: 0.5 * x, x, start_index=MIN_SAMPLING_STEPS - 2)


def test_initial_latents_mix_init_like_the_reference():
    s = SpacedSchedule.create(10)
    noise, init = torch.randn(2, 4, 2, 2), torch.randn(1, 4, 2, 2)
    x, start = initial_latents(s, noise, init, skip_steps=4)
    ab = s.alphas_cumprod[5]
    assert start == 5 and torch.allclose(x, np.sqrt(ab) * init + np.sqrt(1 - ab) * noise, atol=1e-6)
    assert torch.equal(initial_latents(s, noise)[0], noise)
    x, _ = initial_latents(s, noise, None, skip_steps=2)  # skipping without an image diffuses zeros
    assert torch.allclose(x, np.sqrt(1 - s.alphas_cumprod[7]) * noise, atol=1e-6)


def test_guidance_guides_three_channels_and_passes_the_fourth():
    unet = tiny_unet(context_dim=16)
    g = torch.Generator().manual_seed(0)
    ctx = torch.randn(4, 77, 16, generator=g)
    x = torch.randn(4, 4, 8, 8, generator=g)
    t = torch.full((4,), 500.0)
    with torch.no_grad():
        raw = unet(torch.cat([x[:2], x[:2]]), t, ctx)
        out = guided_model_fn(unet, ctx, 3.0)(x, t)
        other_half = guided_model_fn(unet, ctx, 3.0)(torch.cat([x[:2], torch.randn(2, 4, 8, 8)]), t)
    guided = raw[2:, :3] + 3.0 * (raw[:2, :3] - raw[2:, :3])
    torch.testing.assert_close(out[:2, :3], guided)
    torch.testing.assert_close(out[2:, :3], guided)
    assert torch.equal(out[:, 3:], raw[:, 3:])
    assert torch.equal(other_half, out)  # rows [B:2B] of x are ignored


# -- pipeline ---------------------------------------------------------------------------------------------------------

class StubBert(nn.Module):
    """Fast stand-in: a fixed random embedding per distinct text."""

    def __init__(self, dim=16):
        super().__init__()
        self.dim = dim
        self.scale = nn.Parameter(torch.ones(()))

    def encode(self, texts):
        rows = [torch.randn(77, self.dim, generator=torch.Generator().manual_seed(sum(map(ord, t)) + len(t)))
                for t in texts]
        return torch.stack(rows) * self.scale


class StubVae(nn.Module):
    """Fast stand-in f8 autoencoder: 8x8 average pooling / nearest upsampling of 3 colour channels (+ their mean)."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))

    def encode(self, x):
        m = nn.functional.avg_pool2d(x, 8) * self.gain
        return torch.cat([m, m.mean(1, keepdim=True)], 1), torch.full_like(torch.cat([m, m[:, :1]], 1), -6.0)

    def decode(self, z):
        return nn.functional.interpolate(z[:, :3], scale_factor=8, mode="nearest")


@pytest.fixture(scope="module")
def pipe():
    # 64x64 images (8x8 latents) keep the API tests fast; 256x256 is checked separately
    return Glid3Pipeline(tiny_unet(context_dim=16), StubVae(), StubBert(16), image_size=64)


def test_generate_256_in_batches():
    out = Glid3Pipeline(tiny_unet(context_dim=16), StubVae(), StubBert(16)).generate(
        "a red fox", num_images=2, seed=7, steps=4, batch_size=1)
    assert out.shape == (2, 256, 256, 3) and out.dtype == np.uint8 and not np.array_equal(out[0], out[1])


def test_generate_seed_determinism(pipe):
    a = pipe.generate("a red fox", num_images=3, seed=7, steps=4, batch_size=2)
    assert a.shape == (3, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, pipe.generate("a red fox", num_images=3, seed=7, steps=4, batch_size=2))
    assert not np.array_equal(a, pipe.generate("a red fox", num_images=3, seed=8, steps=4, batch_size=2))
    assert not np.array_equal(a[0], a[1])  # each image has its own noise
    assert a.std() > 0


def test_refine_uses_the_image_and_skip_rate(pipe):
    img = np.zeros((100, 60, 3), np.uint8)
    img[:, :30] = 255
    r = pipe.refine(img, "a zebra", num_images=1, seed=1, steps=10, skip_rate=0.6)
    assert r.shape == (1, 64, 64, 3) and r.dtype == np.uint8
    other = np.full((100, 60, 3), 128, np.uint8)
    assert not np.array_equal(r, pipe.refine(other, "a zebra", num_images=1, seed=1, steps=10, skip_rate=0.6))
    rgba = np.dstack([img, np.full(img.shape[:2], 7, np.uint8)])  # alpha is dropped like PIL's convert('RGB')
    assert np.array_equal(r, pipe.refine(rgba, "a zebra", num_images=1, seed=1, steps=10, skip_rate=0.6))


def test_refine_refuses_skip_rates_that_leave_too_few_steps(pipe):
    img = np.zeros((32, 32, 3), np.uint8)
    for rate in (0.97, 1.0):  # int(100 * 0.97) = 97 leaves 3 steps: the reference returns NaN images there
        with pytest.raises(ValueError, match=r"skip_rate.*at least 4 must remain.*skip_rate <= 0\.96"):
            pipe.refine(img, "x", 1, seed=0, steps=100, skip_rate=rate)
    for kwargs in ({"skip_rate": -0.1}, {"skip_rate": "half"}):
        with pytest.raises(ValueError, match="skip_rate"):
            pipe.refine(img, "x", 1, seed=0, steps=10, **kwargs)
    with pytest.raises(ValueError, match="image"):
        pipe.refine(img.astype(np.float32), "x", 1, seed=0, steps=10)


@pytest.mark.parametrize("kwargs,match", [
    ({"num_images": 0}, "num_images"), ({"steps": 3}, "steps"), ({"steps": 1001}, "steps"), ({"seed": -1}, "seed"),
    ({"guidance_scale": float("nan")}, "guidance_scale"), ({"batch_size": 0}, "batch_size"),
])
def test_generate_validates_arguments(pipe, kwargs, match):
    args = {"prompt": "x", "num_images": 1, "seed": 0, "steps": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        pipe.generate(**args)


def test_clip_conditioned_checkpoint_needs_embeddings():
    pipe = Glid3Pipeline(tiny_unet(context_dim=16, clip_embed_dim=5), StubVae(), StubBert(16), image_size=64)
    with pytest.raises(ValueError, match="clip_embed"):
        pipe.generate("x", 1, seed=0, steps=4)
    with pytest.raises(ValueError, match="blank_clip_embed: must be 5"):
        pipe.generate("x", 1, seed=0, steps=4, clip_embed=np.ones(5), blank_clip_embed=np.ones((1, 4)))
    a = pipe.generate("x", 1, seed=0, steps=4, clip_embed=np.ones(5), blank_clip_embed=np.zeros((1, 5)))
    b = pipe.generate("x", 1, seed=0, steps=4, clip_embed=-np.ones(5), blank_clip_embed=np.zeros((1, 5)))
    assert a.shape == (1, 64, 64, 3) and not np.array_equal(a, b)


def test_context_width_mismatch_is_refused():
    with pytest.raises(ValueError, match="context_dim=16"):
        Glid3Pipeline(tiny_unet(context_dim=16), StubVae(), StubBert(8))


def test_many_images_are_batched():
    # 36 images (DALL·E Flow's largest request) in batches of 8; small latents keep it fast
    pipe = Glid3Pipeline(tiny_unet(context_dim=16), StubVae(), StubBert(16), image_size=64)
    out = pipe.generate("many", num_images=36, seed=2, steps=4, batch_size=8)
    assert out.shape == (36, 64, 64, 3)
    assert len({img.tobytes() for img in out}) == 36


def test_tiny_pipeline_with_real_collaborators():
    pipe = Glid3Pipeline.tiny()
    out = pipe.generate("a cat", num_images=1, seed=0, steps=MIN_SAMPLING_STEPS)
    assert out.shape == (1, 256, 256, 3) and out.dtype == np.uint8 and out.std() > 0
