"""The upscaler and clipseg executors without a Flow: the real-weights start-up paths and their configuration."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from docarray import Document, DocumentArray

from dalle_flow.serving import weights
from dalle_flow.models.clipseg import tiny_clipseg
from dalle_flow.models.swinir import save_swinir, tiny_swinir
from tests.conftest import decode_data_uri, load_script, png_data_uri, test_image



@pytest.fixture(scope="module")
def swinir_ex():
    return load_script("executors/swinir/executor.py")


@pytest.fixture(scope="module")
def clipseg_ex():
    return load_script("executors/clipseg/executor.py")


def upscaled(executor, image, parameters=None) -> Document:
    docs = DocumentArray([Document(uri=png_data_uri(image))])
    executor.upscale_docs(docs, parameters or {})
    return docs[0]


def test_real_preset_loads_the_registry_file_at_start(swinir_ex, tmp_path, monkeypatch):
    folder = tmp_path / "weights" / "swinir"
    folder.mkdir(parents=True)
    save_swinir(tiny_swinir(), folder / swinir_ex.SWINIR_FILE)  # the released file's layout, small weights
    # the registry pins the released file's size, so the small stand-in is vouched for in a manifest
    manifest = tmp_path / "sizes.json"
    size = (folder / swinir_ex.SWINIR_FILE).stat().st_size
    manifest.write_text(json.dumps({f"swinir/{swinir_ex.SWINIR_FILE}": {"size": size}}))
    monkeypatch.setenv(weights.ENV_MANIFEST, str(manifest))
    real = swinir_ex.SwinIRUpscaler(preset="real", device="cpu", weights_dir=str(tmp_path / "weights"))
    tiny = swinir_ex.SwinIRUpscaler(preset="tiny", device="cpu")
    image = test_image(24, seed=4)
    from_file, built = upscaled(real, image), upscaled(tiny, image)
    np.testing.assert_array_equal(decode_data_uri(from_file.uri), decode_data_uri(built.uri))
    assert from_file.tags["upscaler"] == "SwinIR-L real-SR x4 GAN" and "preset" not in from_file.tags
    assert built.tags["preset"] == "tiny"


def test_missing_swinir_weights_stop_the_start(swinir_ex, tmp_path, monkeypatch):
    monkeypatch.setenv(weights.ENV_OFFLINE, "1")
    monkeypatch.setattr(weights, "CACHE_DIR", tmp_path / "cache")
    with pytest.raises(weights.MissingWeightsError, match=swinir_ex.SWINIR_FILE):
        swinir_ex.SwinIRUpscaler(preset="real", device="cpu", weights_dir=str(tmp_path))


@pytest.mark.parametrize("side", [0, 1025, "big"])
def test_max_input_side_is_checked(swinir_ex, side):
    with pytest.raises((ValueError, TypeError), match="max_input_side|invalid literal"):
        swinir_ex.SwinIRUpscaler(preset="tiny", device="cpu", max_input_side=side)


def test_smaller_max_input_side_refuses_larger_images(swinir_ex):
    executor = swinir_ex.SwinIRUpscaler(preset="tiny", device="cpu", max_input_side=16)
    assert decode_data_uri(upscaled(executor, test_image(16)).uri).shape == (64, 64, 3)
    with pytest.raises(ValueError, match="at most 16 pixels on each side"):
        upscaled(executor, test_image(17))


def test_tensor_input_is_replaced_by_the_png_uri(swinir_ex):
    executor = swinir_ex.SwinIRUpscaler(preset="tiny", device="cpu")
    image = test_image(8, seed=1)
    docs = DocumentArray([Document(tensor=image)])
    executor.upscale_docs(docs, {})
    assert docs[0].tensor is None and not docs[0].blob
    np.testing.assert_array_equal(decode_data_uri(docs[0].uri), decode_data_uri(upscaled(executor, image).uri))


def test_one_bad_image_leaves_the_whole_request_untouched(swinir_ex):
    executor = swinir_ex.SwinIRUpscaler(preset="tiny", device="cpu")
    good = png_data_uri(test_image(8))
    docs = DocumentArray([Document(uri=good), Document(uri="https://example.com/x.png")])
    with pytest.raises(ValueError, match=r"docs\[1\]\.uri: only inline images"):
        executor.upscale_docs(docs, {})
    assert docs[0].uri == good and "upscaled" not in docs[0].tags


def test_clipseg_loads_a_local_checkpoint_folder(clipseg_ex, tmp_path):
    model, processor = tiny_clipseg()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    real = clipseg_ex.ClipSegmenter(model_name=str(tmp_path), preset="real", device="cpu")
    tiny = clipseg_ex.ClipSegmenter(preset="tiny", device="cpu")
    outputs = []
    for executor in (real, tiny):
        docs = DocumentArray([Document(uri=png_data_uri(test_image(40, seed=2)), text="a dog")])
        executor.segment_docs(docs, {"thresholding_type": "none"})
        outputs.append(docs[0])
    # soft masks of the same weights; uint8 truncation may move a value by one grey level
    diff = np.abs(decode_data_uri(outputs[0].uri).astype(int) - decode_data_uri(outputs[1].uri).astype(int))
    assert diff.max() <= 1
    assert outputs[0].tags["segmenter"] == f"CLIPSeg {tmp_path}" and "preset" not in outputs[0].tags


def test_params_are_those_the_pipeline_enforces(clipseg_ex):
    from dalle_flow.pipelines.clipseg import SEGMENT_PARAMS, apply_threshold

    assert clipseg_ex.SEGMENT_PARAMS is SEGMENT_PARAMS
    mask = np.random.default_rng(0).random((8, 8)).astype(np.float32)
    for spec in SEGMENT_PARAMS.specs:
        if spec.kind not in ("int", "float"):
            continue
        for value, ok in ((spec.low, True), (spec.high, True), (spec.low - 1, False), (spec.high + 1, False)):
            kind = "binary" if spec.name == "binary_thresh_strength" else "adaptive_mean"
            value = int(value) if spec.kind == "int" else float(value)
            if ok:
                apply_threshold(mask, kind, **{spec.name: value})
                assert spec.convert(value) == value
            else:
                with pytest.raises(ValueError, match=spec.name):
                    apply_threshold(mask, kind, **{spec.name: value})
                with pytest.raises(ValueError, match=spec.name):
                    spec.convert(value)
