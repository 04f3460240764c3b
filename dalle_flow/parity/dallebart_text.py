"""The text cases of a DalleBart fixture folder: "processor", "text_normalizer", "text_normalizer_hashtags".

All three are exact matches. The word-frequency file is looked up in the folder (the real
``enwiki-words-frequency.txt`` if present, else a stand-in ``*words-frequency*.txt``); the plain normaliser case's
outputs do not depend on which file it is.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dalle_flow.models.dallebart.processor import DalleProcessor
from dalle_flow.models.dallebart.text import TextNormalizer
from dalle_flow.parity.compare import CaseResult, compare_exact, load_npz

TEXT_CASES = ("processor", "text_normalizer", "text_normalizer_hashtags")
REAL_WORDS_FILE = "enwiki-words-frequency.txt"
_MAX_REPORTED = 3  # mismatching examples quoted in a failing case's detail


def find_words_file(folder: str | Path) -> Path:
    folder = Path(folder)
    if (folder / REAL_WORDS_FILE).is_file():
        return folder / REAL_WORDS_FILE
    found = sorted(folder.glob("*words-frequency*.txt"))
    if len(found) != 1:
        raise FileNotFoundError(f"{folder}: expected {REAL_WORDS_FILE} or exactly one '*words-frequency*.txt', "
                                f"found {[p.name for p in found]}")
    return found[0]


def run_text_cases(folder: Path, spec: dict, case_names: list[str]) -> list[CaseResult]:
    folder = Path(folder)
    cases = {case["name"]: case for case in spec["cases"]}
    unknown = [name for name in case_names if name not in TEXT_CASES]
    if unknown:
        raise ValueError(f"not text cases: {unknown} (text cases are {TEXT_CASES})")
    results = []
    for name in case_names:
        if name not in cases:
            results.append(CaseResult(name, False, float("inf"), "no such case in fixture.json"))
            continue
        case = cases[name]
        try:
            words = find_words_file(folder)
            if name == "processor":
                results.append(_processor_case(folder, case, words))
            else:
                results.append(_normalizer_case(folder, case, words))
        except Exception as exc:  # one broken case must not hide the others
            results.append(CaseResult(name, False, float("inf"), f"{type(exc).__name__}: {exc}"))
    return results


def _processor_case(folder: Path, case: dict, words: Path) -> CaseResult:
    prompts = _read_json(folder / case["inputs"])["prompts"]
    expected = load_npz(folder / case["expected"])
    processor = DalleProcessor.from_folder(folder, words)
    input_ids, attention_mask = processor(prompts)
    uncond_ids, uncond_mask = processor.uncond_ids(len(prompts))
    actual = {"input_ids": input_ids, "attention_mask": attention_mask,
              "input_ids_uncond": uncond_ids, "attention_mask_uncond": uncond_mask}
    missing = sorted(set(expected) - set(actual))
    if missing:
        return CaseResult("processor", False, float("inf"), f"expected keys this check does not produce: {missing}")
    problems = []
    for key in sorted(expected):
        result = compare_exact(key, actual[key], expected[key])
        if not result.ok:
            rows = _bad_rows(actual[key].numpy(), expected[key]) if result.max_abs_err != float("inf") else []
            examples = "; ".join(f"{prompts[r]!r}: got {actual[key][r].tolist()} want {expected[key][r].tolist()}"
                                 for r in rows[:_MAX_REPORTED])
            problems.append(f"{key}: {result.detail} {examples}".strip())
    ok = not problems
    return CaseResult("processor", ok, 0.0 if ok else 1.0,
                      f"{len(prompts)} prompts, {len(expected)} arrays exact" if ok else " | ".join(problems))


def _normalizer_case(folder: Path, case: dict, words: Path) -> CaseResult:
    pairs = _read_json(folder / case["expected"])
    normalizer = TextNormalizer(words)
    bad = [(text, out, want) for text, want in pairs if (out := normalizer(text)) != want]
    if bad:
        examples = "; ".join(f"{text!r} -> {out!r}, want {want!r}" for text, out, want in bad[:_MAX_REPORTED])
        return CaseResult(case["name"], False, 1.0, f"{len(bad)}/{len(pairs)} differ: {examples}")
    return CaseResult(case["name"], True, 0.0, f"{len(pairs)} strings exact")


def _bad_rows(actual: np.ndarray, expected: np.ndarray) -> list[int]:
    return [int(r) for r in np.nonzero((actual != expected).reshape(len(expected), -1).any(axis=1))[0]]


def _read_json(path: Path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)
