"""Parity of the LDM BERTEmbedder and its tokenizer against `ldm_bert_embedder*` fixture folders (tests/fixtures/parity/ldm/bert).

The checkpoint and vocab are the files fixture.json names; sizes come from the tensors. A case is recognised by its
inputs and expected outputs: `prompts` + `input_ids` -> tokenizer (exact), `tokens` -> embeddings of given ids,
`prompts` + `z` -> encode().
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dalle_flow.models.glid3.config import BertConfig
from dalle_flow.models.glid3.loader import bert_config_from_state_dict, full_bert_meta, load_bert_embedder
from dalle_flow.parity.compare import CaseResult, compare_outputs, compare_state_shapes, load_npz, read_manifest


def _vocab_path(folder: Path, spec: dict) -> Path:
    tok = spec.get("tokenizer", {})
    name = tok.get("vocab_file") or tok.get("init", {}).get("vocab_file") or "vocab.txt"
    return folder / name


@torch.no_grad()
def _outputs(model, inputs: dict[str, np.ndarray], wanted: set[str]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    if "prompts" in inputs:
        prompts = [str(p) for p in inputs["prompts"].tolist()]
        batch = model.tokenizer_batch(prompts)
        out["input_ids"] = model.tokenize(prompts)
        out["length"] = batch["length"]
        if wanted & {"z", "embeddings"}:
            out["z"] = model.encode(prompts)
    if "tokens" in inputs:
        out["z"] = model(torch.from_numpy(inputs["tokens"]).long()).float()
    if "input_ids" in inputs:
        out["z"] = model(torch.from_numpy(inputs["input_ids"]).long()).float()
    return out


def run_fixture(folder: Path, spec: dict) -> list[CaseResult]:
    folder = Path(folder)
    model = load_bert_embedder(folder / spec["checkpoint"], _vocab_path(folder, spec))
    results = []

    if "state_dict_keys" in spec:
        full = full_bert_meta(model.config)
        shapes = {k: tuple(v.shape) for k, v in full.state_dict().items()}
        results.append(compare_state_shapes("state_dict_keys", shapes, spec["state_dict_keys"]))
    config = spec.get("config", {})
    if "n_embed" in config:
        derived = model.config
        want = (config["n_embed"], config["n_layer"], config.get("vocab_size", derived.vocab_size),
                config.get("max_seq_len", derived.max_seq_len))
        got = (derived.n_embed, derived.n_layer, derived.vocab_size, derived.max_seq_len)
        extra = config.get("derived", {})
        if "heads" in extra:
            want += (extra["heads"], extra.get("dim_head", derived.dim_head))
            got += (derived.heads, derived.dim_head)
        results.append(CaseResult("config_from_tensors", want == got, 0.0,
                                  "" if want == got else f"tensors give {got}, fixture.json {want}"))

    for case in spec["cases"]:
        inputs = load_npz(folder / case["inputs"])
        expected = load_npz(folder / case["expected"])
        got = _outputs(model, inputs, set(expected))
        results.append(compare_outputs(case["name"], got, expected, case["atol"], case["rtol"]))

    manifest = read_manifest(folder)
    if manifest is not None:
        cfg = manifest["config"]
        full = full_bert_meta(BertConfig(n_embed=cfg["n_embed"], n_layer=cfg["n_layer"],
                                         vocab_size=cfg.get("vocab_size", 30522),
                                         max_seq_len=cfg.get("max_seq_len", 77),
                                         heads=cfg.get("derived", {}).get("heads", 8),
                                         dim_head=cfg.get("derived", {}).get("dim_head", 64)))
        shapes = {k: tuple(v.shape) for k, v in full.state_dict().items()}
        result = compare_state_shapes("manifest_full", shapes, manifest["tensors"])
        n_params = sum(v.numel() for v in full.state_dict().values())
        if result.ok and "num_params" in manifest and n_params != manifest["num_params"]:
            result = CaseResult("manifest_full", False, 0.0, f"{n_params} params != {manifest['num_params']}")
        # the manifest's sizes must also be what the loader would derive from such tensors
        meta_sd = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
        derived = bert_config_from_state_dict(meta_sd, full.config.dim_head)
        if result.ok and (derived.n_layer, derived.heads) != (full.config.n_layer, full.config.heads):
            result = CaseResult("manifest_full", False, 0.0, f"loader would derive {derived}")
        results.append(result)
    return results
