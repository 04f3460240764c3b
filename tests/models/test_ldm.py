"""LDM KL-f8 autoencoder, BERT text embedder and the restricted unpickler (GLID-3 XL's first stage and text encoder)."""
from __future__ import annotations

import json
import os
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dalle_flow.models.glid3 import kl_vae as kl
from dalle_flow.models.glid3 import loader
from dalle_flow.models.glid3.config import BertConfig, KLConfig
from dalle_flow.models.glid3.tokenizer import tiny_vocab
from dalle_flow.parity import bert as parity_bert
from dalle_flow.parity import kl_vae as parity_kl_vae
from dalle_flow.models.glid3.unpickle import UnsafeCheckpointError, load_checkpoint
from dalle_flow.parity import read_spec
from dalle_flow.parity import run_fixture as run_any_fixture
from tests.conftest import FIXTURES_ROOT


ROOT = Path(__file__).resolve().parents[2]
FIXTURES = FIXTURES_ROOT / "ldm"
LDM_FOLDERS = ["kl_vae", "kl_vae_sd", "bert"]


# --------------------------------------------------------------------------------------------------------------------
# parity fixtures

@pytest.mark.parametrize("name", LDM_FOLDERS)
def test_fixture_folder(name):
    folder = FIXTURES / name
    if not (folder / "fixture.json").exists():
        pytest.skip(f"fixture folder {folder} not present")
    results = run_any_fixture(folder)
    assert results
    failed = [r.line() for r in results if not r.ok]
    assert not failed, "\n".join(failed)
    names = {r.name for r in results}
    assert {c["name"] for c in read_spec(folder)["cases"]} <= names
    if (folder / "manifest_full.json").exists():
        assert "manifest_full" in names


def test_fixture_detects_wrong_output(tmp_path):
    """The parity module must fail when an expected array is off, not just run."""
    src = FIXTURES / "kl_vae_sd"
    if not src.exists():
        pytest.skip("fixture folder not present")
    spec = read_spec(src)
    case = next(c for c in spec["cases"] if c["name"] == "decode_square")
    for name in (spec["checkpoint"], case["inputs"]):
        (tmp_path / name).write_bytes((src / name).read_bytes())
    expected = dict(np.load(src / case["expected"]))
    expected["image"] = expected["image"] + 1e-2
    np.savez(tmp_path / case["expected"], **expected)
    spec["cases"] = [case]
    results = parity_kl_vae.run_fixture(tmp_path, spec)
    assert not next(r for r in results if r.name == "decode_square").ok


# --------------------------------------------------------------------------------------------------------------------
# KL autoencoder API

def test_tiny_kl_vae_shapes_and_determinism():
    vae = loader.tiny_kl_vae()
    assert vae.config.downscale == 8
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mean, logvar = vae.encode(x)
    assert mean.shape == logvar.shape == (1, 4, 32, 32)
    assert logvar.min() >= kl.LOGVAR_MIN and logvar.max() <= kl.LOGVAR_MAX
    image = vae.decode(mean)
    assert image.shape == (1, 3, 256, 256) and image.dtype == torch.float32
    again = loader.tiny_kl_vae()
    assert all(torch.equal(a, b) for a, b in zip(vae.state_dict().values(), again.state_dict().values()))
    other = loader.tiny_kl_vae(seed=1)
    assert not torch.equal(vae.quant_conv.weight, other.quant_conv.weight)


def test_posterior_sampling_with_generator():
    vae = loader.tiny_kl_vae()
    x = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(1)) * 2 - 1
    mean, logvar = vae.encode(x)
    a = kl.sample_posterior(mean, logvar, torch.Generator().manual_seed(7))
    b = kl.sample_posterior(mean, logvar, torch.Generator().manual_seed(7))
    c = kl.sample_posterior(mean, logvar, torch.Generator().manual_seed(8))
    assert a.shape == (2, 4, 8, 6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(a, mean + torch.exp(0.5 * logvar) * noise)
    latent = kl.image_to_latent(vae, (x + 1) / 2, torch.Generator().manual_seed(7))
    assert torch.allclose(latent, a * kl.SCALE_FACTOR)
    image01 = kl.latent_to_image(vae, latent)
    assert image01.shape == (2, 3, 64, 48) and image01.min() >= 0 and image01.max() <= 1


def test_logvar_clamp_matches_reference_semantics():
    vae = loader.tiny_kl_vae()
    with torch.no_grad():
        vae.quant_conv.bias[4] = 100.0
        vae.quant_conv.bias[5] = -100.0
    _, logvar = vae.encode(torch.zeros(1, 3, 16, 16))
    assert torch.all(logvar[:, 0] == 20.0) and torch.all(logvar[:, 1] == -30.0)
    assert torch.all(vae.moments(torch.zeros(1, 3, 16, 16))[:, 4] > 20)


def test_kl_vae_half_precision_runs():
    vae = loader.tiny_kl_vae(dtype=torch.bfloat16)
    image = vae.decode(torch.randn(1, 4, 4, 4))
    assert image.dtype == torch.bfloat16 and image.shape == (1, 3, 32, 32)


# --------------------------------------------------------------------------------------------------------------------
# KL loading: unseen configs in every accepted format

UNSEEN_KL = KLConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=2, z_channels=3, embed_dim=3, attn_levels=(2,))


def _fake_ldm_modules(monkeypatch):
    """Importable `ldm.*` classes so that torch.save writes the same globals the real kl-f8.pt holds."""
    autoencoder = types.ModuleType("ldm.models.autoencoder")
    ddpm = types.ModuleType("ldm.models.diffusion.ddpm")

    class AutoencoderKL(nn.Module):
        pass

    def disabled_train(self, mode=True):
        return self

    AutoencoderKL.__module__, AutoencoderKL.__qualname__ = autoencoder.__name__, "AutoencoderKL"
    disabled_train.__module__, disabled_train.__qualname__ = ddpm.__name__, "disabled_train"
    autoencoder.AutoencoderKL = AutoencoderKL
    ddpm.disabled_train = disabled_train
    for name in ("ldm", "ldm.models", "ldm.models.diffusion"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, autoencoder.__name__, autoencoder)
    monkeypatch.setitem(sys.modules, ddpm.__name__, ddpm)
    return AutoencoderKL, disabled_train


def _as_plain_tree(module: nn.Module, root_cls=nn.Module) -> nn.Module:
    """Same parameters and names, but every container of ours a plain nn.Module (ldm's `down`, `mid`, ... are)."""
    if isinstance(module, nn.ModuleList):
        return nn.ModuleList([_as_plain_tree(m) for m in module])
    if type(module).__module__.startswith("torch.nn"):  # Conv2d, GroupNorm, Dropout, ... are pickled as they are
        return module
    out = root_cls()
    for name, p in module.named_parameters(recurse=False):
        out.register_parameter(name, p)
    for name, child in module.named_children():
        out.add_module(name, _as_plain_tree(child))
    return out


def test_load_pickled_module_unseen_config(tmp_path, monkeypatch):
    model = loader.tiny_kl_vae(seed=3, config=UNSEEN_KL)
    AutoencoderKL, disabled_train = _fake_ldm_modules(monkeypatch)
    pickled = _as_plain_tree(model, root_cls=AutoencoderKL)
    pickled.loss = nn.Identity()
    pickled.embed_dim = UNSEEN_KL.embed_dim
    pickled.decoder.tanh_out = False
    pickled.eval().requires_grad_(False)
    pickled.train = disabled_train  # what LatentDiffusion does to its first stage
    torch.save(pickled, tmp_path / "kl.pt")
    monkeypatch.undo()  # ldm is not importable while loading

    ckpt = load_checkpoint(tmp_path / "kl.pt")
    assert ckpt.format == "pickled_module" and ckpt.class_name == "ldm.models.autoencoder.AutoencoderKL"
    loaded = loader.load_kl_vae(tmp_path / "kl.pt")
    assert loaded.config == UNSEEN_KL
    x = torch.rand(1, 3, 32, 40) * 2 - 1
    assert torch.equal(loaded.moments(x), model.moments(x))
    z = torch.randn(1, 3, 4, 5)
    assert torch.equal(loaded.decode(z), model.decode(z))
    assert loaded.decode(z).shape == (1, 3, 16, 20)  # f4


def test_load_state_dict_and_lightning_checkpoint(tmp_path):
    model = loader.tiny_kl_vae(seed=4, config=UNSEEN_KL)
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    wrapped = {"state_dict": {**model.state_dict(), "loss.logvar": torch.zeros(()),
                              "loss.discriminator.main.0.weight": torch.zeros(2, 3, 4, 4)},
               "global_step": 10, "epoch": 1}
    torch.save(wrapped, tmp_path / "ckpt.pt")
    z = torch.randn(1, 3, 3, 3)
    for name in ("sd.pt", "ckpt.pt"):
        loaded = loader.load_kl_vae(tmp_path / name)
        assert loaded.config == UNSEEN_KL
        assert torch.equal(loaded.decode(z), model.decode(z))


def test_kl_loader_is_strict(tmp_path):
    sd = loader.tiny_kl_vae().state_dict()
    missing = {k: v for k, v in sd.items() if k != "decoder.conv_out.bias"}
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="missing .*decoder.conv_out.bias"):
        loader.load_kl_vae(tmp_path / "missing.pt")
    extra = {**sd, "decoder.extra.weight": torch.zeros(3)}
    torch.save(extra, tmp_path / "extra.pt")
    with pytest.raises(ValueError, match="unexpected .*decoder.extra.weight"):
        loader.load_kl_vae(tmp_path / "extra.pt")
    bert_sd = loader.tiny_bert_embedder().state_dict()
    torch.save(bert_sd, tmp_path / "bert.pt")
    with pytest.raises(ValueError, match="not an AutoencoderKL"):
        loader.load_kl_vae(tmp_path / "bert.pt")
    with pytest.raises(FileNotFoundError):
        loader.load_kl_vae(tmp_path / "nope.pt")


def test_full_size_kl_f8_on_meta():
    full = loader.full_kl_f8_meta()
    n = sum(p.numel() for p in full.parameters())
    assert n == 83_653_863 and len(full.state_dict()) == 248
    assert loader.kl_config_from_state_dict(full.state_dict()) == KLConfig()


# --------------------------------------------------------------------------------------------------------------------
# restricted unpickler

class _Exploit:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("target", ["os.system", "builtins.eval", "builtins.getattr"])
def test_unpickler_refuses_code(tmp_path, target):
    marker = tmp_path / "pwned"
    func = {"os.system": os.system, "builtins.eval": eval, "builtins.getattr": getattr}[target]
    arg = {"os.system": f"touch {marker}", "builtins.eval": f"open({str(marker)!r}, 'w')",
           "builtins.getattr": "x"}[target]
    payload = {"state_dict": OrderedDict(w=torch.zeros(2)), "evil": _Exploit(func, arg)}
    torch.save(payload, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError, match="refusing to unpickle global"):
        load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError):
        loader.load_kl_vae(tmp_path / "evil.pt")
    assert not marker.exists()


def test_unpickler_reads_plain_state_dict(tmp_path):
    sd = OrderedDict(a=torch.arange(6.0).reshape(2, 3), b=torch.ones(2, dtype=torch.float16))
    torch.save(sd, tmp_path / "sd.pt")
    ckpt = load_checkpoint(tmp_path / "sd.pt")
    assert ckpt.format == "state_dict" and list(ckpt.state_dict) == ["a", "b"]
    assert torch.equal(ckpt.state_dict["a"], sd["a"]) and ckpt.state_dict["b"].dtype == torch.float16


# --------------------------------------------------------------------------------------------------------------------
# BERT embedder

def test_tiny_bert_tokenize_and_encode():
    bert = loader.tiny_bert_embedder()
    prompts = ["a cyberpunk girl, trending on artstation!", "", "word " * 100]
    ids = bert.tokenize(prompts)
    assert ids.shape == (3, 77) and ids.dtype == torch.int64
    assert (ids[:, 0] == 101).all()
    assert ids[1, 1] == 102 and (ids[1, 2:] == 0).all()
    assert ids[2, 76] == 102 and (ids[2] != 0).all()  # truncated, [SEP] kept
    assert (ids[0] != 100).all()  # tiny vocab covers ASCII prompts
    z = bert.encode(prompts)
    assert z.shape == (3, 77, bert.config.n_embed) and z.dtype == torch.float32
    assert torch.allclose(bert.encode(prompts[:1])[0], z[0], atol=1e-5)  # rows are independent
    again = loader.tiny_bert_embedder()
    assert torch.equal(again.encode(prompts), z)
    assert torch.equal(bert.tokenize("a cat"), bert.tokenize(["a cat"]))


def test_bert_rejects_too_many_tokens():
    bert = loader.tiny_bert_embedder()
    with pytest.raises(ValueError, match="at most 77"):
        bert(torch.zeros(1, 78, dtype=torch.long))


def _write_vocab(path: Path, vocab: dict[str, int]):
    path.write_text("".join(f"{piece}\n" for piece, _ in sorted(vocab.items(), key=lambda kv: kv[1])),
                    encoding="utf-8")


def test_bert_roundtrip_unseen_config(tmp_path):
    vocab = tiny_vocab()
    config = BertConfig(n_embed=24, n_layer=3, vocab_size=len(vocab) + 5, max_seq_len=77, heads=3)
    model = loader.tiny_bert_embedder(seed=5, config=config)
    sd = model.state_dict()
    # bert.pt carries the unused LM head too
    sd["transformer.to_logits.weight"] = torch.randn(config.vocab_size, config.n_embed)
    sd["transformer.to_logits.bias"] = torch.randn(config.vocab_size)
    torch.save(sd, tmp_path / "bert.pt")
    _write_vocab(tmp_path / "vocab.txt", vocab)
    loaded = loader.load_bert_embedder(tmp_path / "bert.pt", tmp_path / "vocab.txt")
    assert loaded.config == config
    assert not hasattr(loaded.transformer, "to_logits")
    prompts = ["a red sky over the sea", "photo of a dog"]
    assert torch.equal(loaded.tokenize(prompts), model.tokenize(prompts))
    assert torch.allclose(loaded.encode(prompts), model.encode(prompts), atol=1e-6)


def test_bert_loader_errors(tmp_path):
    model = loader.tiny_bert_embedder()
    sd = model.state_dict()
    _write_vocab(tmp_path / "vocab.txt", tiny_vocab())
    torch.save({k: v for k, v in sd.items() if "layers.1.1.net.2.bias" not in k}, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="missing"):
        loader.load_bert_embedder(tmp_path / "missing.pt", tmp_path / "vocab.txt")
    small = {**sd, "transformer.token_emb.weight": sd["transformer.token_emb.weight"][:50]}
    torch.save(small, tmp_path / "small.pt")
    with pytest.raises(ValueError, match="vocab"):
        loader.load_bert_embedder(tmp_path / "small.pt", tmp_path / "vocab.txt")
    bad_logits = {**sd, "transformer.to_logits.weight": torch.zeros(3, 3)}
    torch.save(bad_logits, tmp_path / "logits.pt")
    with pytest.raises(ValueError, match="to_logits"):
        loader.load_bert_embedder(tmp_path / "logits.pt", tmp_path / "vocab.txt")


def test_full_size_bert_on_meta():
    full = loader.full_bert_meta()
    assert sum(p.numel() for p in full.parameters()) == 581_994_042
    derived = loader.bert_config_from_state_dict(full.state_dict())
    assert (derived.n_embed, derived.n_layer, derived.heads, derived.vocab_size) == (1280, 32, 8, 30522)


def test_bert_parity_on_generated_folder(tmp_path):
    """run_fixture on a folder it has never seen: other sizes, case names and vocab."""
    vocab = tiny_vocab()
    config = BertConfig(n_embed=32, n_layer=1, vocab_size=len(vocab), heads=1)
    model = loader.tiny_bert_embedder(seed=9, config=config)
    torch.save(model.state_dict(), tmp_path / "b.pt")
    _write_vocab(tmp_path / "vocab.txt", vocab)
    prompts = np.array(["a blue cat", "digital art of the city at night"])
    tokens = model.tokenize(list(prompts))
    with torch.no_grad():
        # expected values by hand from the weights: embeddings + one pre-norm attention/ff layer + final norm
        t = model.transformer
        x = t.token_emb.weight[tokens] + t.pos_emb.emb.weight[: tokens.shape[1]]
        for layer in t.attn_layers.layers:
            x = x + layer[1](layer[0](x))
        z = torch.nn.functional.layer_norm(x, (32,), t.norm.weight, t.norm.bias, 1e-5)
    np.savez(tmp_path / "tok_in.npz", prompts=prompts)
    np.savez(tmp_path / "tok_out.npz", input_ids=tokens.numpy())
    np.savez(tmp_path / "emb_in.npz", tokens=tokens.numpy())
    np.savez(tmp_path / "emb_out.npz", z=z.numpy())
    spec = {"kind": "ldm_bert_embedder_variant", "checkpoint": "b.pt", "tokenizer": {"vocab_file": "vocab.txt"},
            "config": {"n_embed": 32, "n_layer": 1, "vocab_size": len(vocab), "max_seq_len": 77},
            "cases": [{"name": "toks", "inputs": "tok_in.npz", "expected": "tok_out.npz", "atol": 0, "rtol": 0},
                      {"name": "embs", "inputs": "emb_in.npz", "expected": "emb_out.npz", "atol": 1e-5,
                       "rtol": 1e-5}]}
    (tmp_path / "fixture.json").write_text(json.dumps(spec))
    results = run_any_fixture(tmp_path)
    assert [r.name for r in results] == ["config_from_tensors", "toks", "embs"]
    assert all(r.ok for r in results), [r.line() for r in results]
    assert parity_bert.run_fixture(tmp_path, spec)[1].ok
