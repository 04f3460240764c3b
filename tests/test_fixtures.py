"""Every parity fixture folder in tests/fixtures/parity passes through the project's own loaders (tools/check_fixture.py)."""
import json
import subprocess
import sys

import pytest

from dalle_flow.parity import run_fixture
from tests.conftest import FIXTURES_ROOT, REPO_ROOT, fixture_dirs

FOLDERS = fixture_dirs()


def test_fixture_folders_are_present():
    assert FOLDERS, f"no fixture folders found under {FIXTURES_ROOT}"


@pytest.mark.parametrize("folder", FOLDERS, ids=[str(f.relative_to(FIXTURES_ROOT)) for f in FOLDERS])
def test_fixture_parity(folder):
    results = run_fixture(folder)
    spec = json.loads((folder / "fixture.json").read_text())
    # a case reports one line, or one per output named "<case>/<key>" or "<case>.<key>"
    ran = {r.name.replace(".", "/").split("/")[0] for r in results} | {r.name for r in results}
    missing = [case["name"] for case in spec["cases"] if case["name"] not in ran]
    assert not missing, f"cases not run: {missing}"
    if (folder / "manifest_full.json").exists():
        assert any("manifest" in r.name for r in results), "manifest_full.json was not checked"
    failed = [r.line() for r in results if not r.ok]
    assert not failed, "\n".join(failed)


def test_check_fixture_cli_fails_on_unknown_kind(tmp_path):
    (tmp_path / "fixture.json").write_text(json.dumps({"kind": "no_such_model", "cases": []}))
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "check_fixture.py"), str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "unknown fixture kind" in proc.stdout
