"""The README's endpoint/parameter table, flow.yml and the pipelines' parameter declarations agree
(tools/check_docs.py), and the checker finds each kind of disagreement it exists for."""
from __future__ import annotations

import pytest

from tests.conftest import REPO_ROOT, load_script


@pytest.fixture(scope="module")
def checker():
    return load_script("tools/check_docs.py")


@pytest.fixture(scope="module")
def executors(checker):
    return checker.flow_executors(REPO_ROOT / "flow.yml")


@pytest.fixture(scope="module")
def readme():
    return (REPO_ROOT / "README.md").read_text()


def test_readme_flow_and_declarations_agree(checker, executors, readme):
    assert checker.find_disagreements(readme, executors) == []


def test_every_endpoint_and_parameter_is_checked(checker, executors, readme):
    table = checker.readme_table(readme)
    assert set(table) == {"/", "/diffuse", "/upscale", "/segment", "/encode", "/rank", "/history", "/parameters",
                          "/_cancel"}
    declarations = checker.served_declarations(executors)
    assert {endpoint: sorted(by_executor) for endpoint, by_executor in declarations.items()} == {
        "/": ["dalle", "diffusion"], "/diffuse": ["diffusion"], "/upscale": ["upscaler"], "/segment": ["clipseg"],
        "/history": ["store"]}


@pytest.mark.parametrize("old, new, problem", [
    ("`num_images` (8; 1–32)", "`num_images` (8; 1–16)", "/ (dalle): `num_images` range is (1.0, 32.0) in the"),
    ("`num_images` (36; 1–36)", "`num_images` (12; 1–36)", "/diffuse (diffusion): `num_images` default is 36"),
    ("`adaptive_thresh_c` (2; ±255)", "`adaptive_thresh_c` (2; ±128)", "`adaptive_thresh_c` range"),
    ("`adaptive_gaussian`), `binary_thresh", "`otsu`), `binary_thresh", "`thresholding_type` choices"),
    ("`invert` (false)", "`invert` (true)", "`invert` default is false in the code, true in the README"),
    (", `limit` (20; 1–100)", "", "/history (store): `limit` is served but not in the README"),
    ("`tile` (off;", "`tiles` (off;", "/upscale (upscaler): the README lists `tiles`, which is not served"),
    ("`top_k` (50; 1–16384)", "`top_k` (50)", "`top_k` has the range 1–16384 in the code, none in the README"),
    ("GLID-3 XL: `num_images`", "GLID-3: `num_images`", "/: the README has no section for ['diffusion']"),
    ("| `/encode`, `/rank` |", "| `/encode` |", "/rank: served by flow.yml but not in the README table"),
    ("| `/history` |", "| `/history`, `/search` |", "/search: in the README table but not served by flow.yml"),
])
def test_a_readme_that_disagrees_is_caught(checker, executors, readme, old, new, problem):
    assert old in readme
    problems = checker.find_disagreements(readme.replace(old, new, 1), executors)
    assert any(problem in p for p in problems), problems


def test_a_changed_declaration_or_setting_is_caught(checker, executors, readme):
    from dalle_flow.pipelines.dalle_mega import DALLE_PARAMS

    declarations = checker.served_declarations(executors)
    declarations["/"]["dalle"] = DALLE_PARAMS.with_defaults(top_p=0.95)  # a code change the README did not follow
    problems = checker.find_disagreements(readme, executors, declarations)
    assert problems == ["/ (dalle): `top_p` default is 0.95 in the code, 0.9 in the README"]
    # flow.yml's settings are what the table must show: another configured default `steps` for GLID-3
    diffusion = executors["diffusion"]
    reconfigured = {**executors, "diffusion": {**diffusion, "config": {**diffusion["config"], "steps": 50}}}
    problems = checker.find_disagreements(readme, reconfigured)
    assert "/ (diffusion): `steps` default is 50 in the code, 100 in the README" in problems
    assert "/diffuse (diffusion): `steps` default is 50 in the code, 100 in the README" in problems
