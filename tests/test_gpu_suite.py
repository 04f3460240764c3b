"""benchmarks/gpu_suite.py --tiny, run as a user would (a subprocess): every section runs its code path on the CPU and
the JSON holds every row, precision figure and memory entry the GPU run reports."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import FIXTURES_ROOT, REPO_ROOT as ROOT, load_script

EXPECTED_ROWS = {
    ("DALL·E Mega", "9 images, decode loop eager"), ("DALL·E Mega", "16 images, decode loop eager"),
    ("VQGAN f16", "decode 9 images"), ("VQGAN f16", "decode 16 images"),
    ("GLID-3 XL", "1 image, 8 PLMS steps"), ("GLID-3 XL", "2 images, 8 PLMS steps"),  # tiny: 2 where the GPU run has 8
    ("GLID-3 XL", "/diffuse 2 images, skip_rate 0.5"), ("SwinIR-L x4", "256² -> 1024²"),
    ("CLIP ViT-L/14@336px", "rank 16 candidates"), ("CLIPSeg rd64-refined", "one mask"),
}


def test_tiny_suite_writes_every_figure(tmp_path):
    out = tmp_path / "results.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py"), "--tiny", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["tiny"] is True and report["device"] == "cpu" and report["errors"] == {}
    rows = {(r["model"], r["setting"]) for r in report["rows"]}
    assert EXPECTED_ROWS <= rows, EXPECTED_ROWS - rows
    # GLID-3, SwinIR, CLIP and CLIPSeg are timed in both precisions; CPU DALL·E in its served fp32
    dtypes = {(r["model"], r["dtype"]) for r in report["rows"]}
    for model in ("GLID-3 XL", "SwinIR-L x4", "CLIP ViT-L/14@336px", "CLIPSeg rd64-refined"):
        assert {(model, "fp16"), (model, "fp32")} <= dtypes, model
    for r in report["rows"]:
        assert r["seconds"] > 0 and math.isfinite(r["throughput"]) and r["throughput"] > 0, r
        assert r["peak_mib"] is None  # no GPU memory on the CPU
    precision = report["precision"]
    assert set(precision) == {"dalle", "glid3", "swinir", "clip", "clipseg"}
    first = precision["dalle"]["first_step_logits"]
    assert 0 < first["max_abs"] < 1 and first["nonfinite_mismatch"] == 0  # fp16 differs, a little
    assert 0 <= precision["dalle"]["token_agreement"] <= 1
    assert precision["dalle"]["cuda_graph_tokens_equal_eager"] is None  # no CUDA graphs on the CPU
    assert precision["glid3"]["final_latent"]["max_abs"] > 0
    assert 0 <= precision["swinir"]["uint8_max_abs"] <= 255
    assert 0.9 < precision["clip"]["cosine_min"] <= 1.0 + 1e-6
    for name, p in precision.items():
        assert isinstance(p["within_tolerance"], bool), name
    memory = report["memory"]
    assert {"dalle", "glid3_fp16", "glid3_fp32", "swinir_fp32", "clip_fp16", "clipseg_fp32",
            "all_together"} <= set(memory)
    together = memory["all_together"]["weights_mib"]
    assert set(together) == {"dalle", "glid3", "swinir", "clip", "clipseg"}
    assert all(v > 0 for v in together.values())
    assert "DALL·E Mega" in done.stdout and "precision, fp16 vs fp32" in done.stdout


@pytest.fixture(scope="module")
def suite():
    return load_script("benchmarks/gpu_suite.py")


def _count(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def test_real_size_builders_match_the_released_files(suite):
    """The GPU run builds what --tiny cannot check: every real-size model, built here on `meta`, has the parameter
    count of the released file (from the parity manifests; BERT's file also holds an unused 39.1 M logits head)."""
    def manifest(name):
        return json.loads((FIXTURES_ROOT / name / "manifest_full.json").read_text())

    dalle, vqgan, text, uncond = suite.build_dalle(False, "meta")
    assert _count(dalle) == manifest("dallebart")["num_params"]
    assert _count(vqgan) == manifest("vqgan")["num_params"]
    assert text.shape == uncond.shape == (1, dalle.config.max_text_length)
    unet, kl, bert = suite.glid3_models("meta", torch.float32)
    glid3 = manifest("glid3")
    assert _count(unet) == sum(math.prod(shape) for shape in glid3["tensors"].values())
    assert _count(kl) == manifest("ldm/kl_vae")["num_params"]
    head = bert.config.n_embed * bert.config.vocab_size + bert.config.vocab_size
    assert _count(bert) + head == manifest("ldm/bert")["num_params"]
    assert _count(suite.build_swinir(False, "meta")) == manifest("swinir")["num_parameters"]
    # CLIP ViT-L/14@336px and CLIPSeg rd64-refined: the published totals of those checkpoints
    assert _count(suite.build_clip(False, "meta").model) == 427_944_193
    assert _count(suite.build_clipseg(False, "meta")[0]) == 150_747_746
