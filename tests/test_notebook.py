"""client.ipynb, executed top to bottom with nbclient in a headless kernel of this venv's Python: the seed README's
walkthrough against the tiny Flow (step counts and image sizes), and its clear message when no Flow is up."""
from __future__ import annotations

import json
import sys

import nbformat
import pytest

from tests.conftest import REPO_ROOT, free_ports

pytestmark = pytest.mark.flow

NOTEBOOK = REPO_ROOT / "client.ipynb"
KERNEL_NAME = "dalle-flow-test-venv"
PROMPT = "a teddy bear on a skateboard in Times Square"
SMALL = dict(prompt=PROMPT, num_candidates=2, num_refinements=3, skip_rate=0.5, diffusion_steps=8, seed=7,
             fav_id=1, dfav_id=2, history_limit=3)

# appended after the notebook's last cell: what each step left in the kernel, measured from the images themselves
SUMMARY_CELL = """
import json as _json
def _shape(doc):
    return list(Document(uri=doc.uri).load_uri_to_image_tensor().tensor.shape)
print('SUMMARY ' + _json.dumps({
    'candidates': [{'generator': d.tags['generator'], 'seed': d.tags['seed'], 'text': d.tags['text'],
                    'shape': _shape(d), 'score': d.scores['clip_score'].value} for d in da],
    'refinements': [{'seed': d.tags['seed'], 'skip_rate': d.tags['skip_rate'], 'steps': d.tags['steps'],
                     'text': d.tags['text'], 'shape': _shape(d)} for d in diffused],
    'upscaled': {'id': fav.id, 'picked_id': diffused[dfav_id].id, 'shape': _shape(fav),
                 'upscaled': fav.tags.get('upscaled'), 'stored_id': fav.tags.get('stored_id'), 'uri': fav.uri},
    'history': [{'id': d.id, 'uri': d.uri} for d in history],
}))
"""


def committed_notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def parameters_cell(nb):
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "client.ipynb needs exactly one cell tagged 'parameters'"
    return cells[0]


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory, monkeypatch_module):
    """A kernelspec for this interpreter in a temporary Jupyter path, so a clean clone needs no `ipykernel install`
    and a user's own `python3` kernelspec cannot run the notebook on another Python."""
    from ipykernel.kernelspec import write_kernel_spec

    root = tmp_path_factory.mktemp("jupyter")
    write_kernel_spec(root / "kernels" / KERNEL_NAME)
    spec = json.loads((root / "kernels" / KERNEL_NAME / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable
    monkeypatch_module.setenv("JUPYTER_PATH", str(root))
    # the inline backend renders figures through Agg into PNG outputs: headless, and checkable below
    monkeypatch_module.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    return KERNEL_NAME


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def run_notebook(kernel_name, workdir, **parameters):
    from nbclient import NotebookClient

    nb = committed_notebook()
    parameters_cell(nb).source = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    nb.cells.append(nbformat.v4.new_code_cell(SUMMARY_CELL))
    NotebookClient(nb, timeout=600, kernel_name=kernel_name, resources={"metadata": {"path": str(workdir)}}).execute()
    return nb


def text_output(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def test_committed_notebook_is_clean_and_parameterised():
    nb = committed_notebook()
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "commit client.ipynb with empty outputs"
    names = {line.split("=")[0].strip() for line in parameters_cell(nb).source.splitlines() if "=" in line}
    assert set(SMALL) | {"server_url"} <= names  # everything the test injects is a documented parameter


def test_walkthrough_against_tiny_flow(tiny_flow, kernel_name, tmp_path):
    nb = run_notebook(kernel_name, tmp_path, server_url=tiny_flow.url("grpc"), **SMALL)
    summary = json.loads(text_output(nb.cells[-1]).split("SUMMARY ", 1)[1])

    health = next(c for c in nb.cells if c.cell_type == "code" and "is_flow_ready" in c.source)
    assert f"DALL·E Flow at {tiny_flow.url('grpc')} is ready" in text_output(health)
    # step 1: num_images reaches both generators; every candidate is 256², seeded as asked, ranked best first
    candidates = summary["candidates"]
    assert sorted(c["generator"] for c in candidates) == ["DALLE-mega"] * 2 + ["GLID3-XL"] * 2
    assert all(c["shape"] == [256, 256, 3] and c["seed"] == 7 and c["text"] == PROMPT for c in candidates)
    scores = [c["score"] for c in candidates]
    assert scores == sorted(scores, reverse=True)
    # step 2: the chosen candidate refined with the asked skip_rate, steps and seed
    refinements = summary["refinements"]
    assert len(refinements) == 3
    assert all(r == {"seed": 7, "skip_rate": 0.5, "steps": 8, "text": PROMPT, "shape": [256, 256, 3]}
               for r in refinements)
    # step 3: the picked refinement came back upscaled to 1024², and it is the newest stored image
    upscaled = summary["upscaled"]
    assert upscaled["id"] == upscaled["picked_id"] and upscaled["upscaled"] is True
    assert upscaled["shape"] == [1024, 1024, 3]
    history = summary["history"]
    assert 1 <= len(history) <= 3
    # the store draws its own ids (a client's doc.id is never a row's key): the newest row is the one it returned
    assert upscaled["stored_id"] and history[0]["id"] == upscaled["stored_id"] and history[0]["uri"] == upscaled["uri"]

    code = [c for c in nb.cells[:-1] if c.cell_type == "code"]
    sprite_cells = [c for c in code if "plot_image_sprites" in c.source]
    assert len(sprite_cells) == 3  # candidates, refinements, history
    for cell in sprite_cells:
        assert any("image/png" in o.get("data", {}) for o in cell.outputs), cell.source
    displayed = [c for c in code if ".display()" in c.source]
    assert len(displayed) == 3  # both picks and the upscaled image
    for cell in displayed:
        assert any("text/html" in o.get("data", {}) for o in cell.outputs), cell.source


def test_health_check_names_the_problem_when_no_flow_listens(kernel_name, tmp_path):
    from nbclient.exceptions import CellExecutionError

    url = f"grpc://127.0.0.1:{free_ports(1)[0]}"  # a port nothing listens on
    with pytest.raises(CellExecutionError) as err:
        run_notebook(kernel_name, tmp_path, server_url=url, **SMALL)
    assert f"No DALL·E Flow is ready at {url}" in str(err.value)
