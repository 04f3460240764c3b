"""`python -m dalle_flow weights list|download|verify` against a local file server (offline)."""
import hashlib
import json

import pytest

from dalle_flow import weights_cli
from dalle_flow.serving import weights
from dalle_flow.serving.weights import WeightFile
from tests.test_weights import PAYLOAD, file_server  # noqa: F401  (fixture: serves PAYLOAD with Range support)


@pytest.fixture
def registry(monkeypatch, file_server, tmp_path):  # noqa: F811
    url = file_server.url
    entries = [
        WeightFile("alpha", "good.bin", url=f"{url}/good.bin", size=len(PAYLOAD),
                   sha256=hashlib.sha256(PAYLOAD).hexdigest(), checksum_source="test"),
        WeightFile("alpha", "unchecked.bin", url=f"{url}/unchecked.bin", approx_size=len(PAYLOAD)),
        WeightFile("beta", "bad.bin", url=f"{url}/bad.bin", sha256="0" * 64, checksum_source="test"),
    ]
    monkeypatch.setattr(weights, "REGISTRY", entries)
    monkeypatch.setattr(weights_cli, "GROUPS", ("alpha", "beta"))
    monkeypatch.setattr(weights, "CACHE_DIR", tmp_path / "cache")
    for variable in ("DALLE_FLOW_WEIGHTS_DIR", weights.ENV_MANIFEST, weights.ENV_MIRROR):
        monkeypatch.delenv(variable, raising=False)
    return entries


def test_list_is_offline_and_counts_what_is_missing(registry, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DALLE_FLOW_OFFLINE", "1")
    assert weights_cli.run("list", None, str(tmp_path / "w")) == 0
    out = capsys.readouterr().out
    assert out.count("missing") >= 3 and "missing: 3 file(s)" in out


def test_download_resumes_checks_records_and_verify_passes(registry, tmp_path, capsys, file_server):  # noqa: F811
    target_dir = tmp_path / "w"
    (target_dir / "alpha").mkdir(parents=True)
    cut = file_server.cut_after
    file_server.fault = "cut"  # an interrupted download leaves a resumable part
    assert weights_cli.run("download", "alpha", str(target_dir)) == 1
    assert "cut short" in capsys.readouterr().out
    assert (target_dir / "alpha" / "good.bin.part").stat().st_size == cut
    file_server.fault = None
    assert weights_cli.run("download", "alpha,beta", str(target_dir)) == 1  # bad.bin fails its checksum
    out = capsys.readouterr().out
    assert (target_dir / "alpha" / "good.bin").read_bytes() == PAYLOAD
    assert "FAILED" in out and "SHA-256" in out
    assert not (target_dir / "beta" / "bad.bin").exists()
    # good.bin is checked against the registry, unchecked.bin against what its download recorded
    assert weights_cli.run("verify", "alpha", str(target_dir)) == 0
    assert capsys.readouterr().out.count("ok (sha256)") == 2


def test_verify_fails_on_wrong_size_and_on_files_nothing_vouches_for(registry, tmp_path, capsys):
    folder = tmp_path / "w" / "alpha"
    folder.mkdir(parents=True)
    (folder / "good.bin").write_bytes(b"x" * 5000)  # a stand-in of the wrong size
    (folder / "unchecked.bin").write_bytes(PAYLOAD)  # placed by hand: no expected size, no record
    assert weights_cli.run("verify", "alpha", str(tmp_path / "w")) == 1
    out = capsys.readouterr().out
    assert "BAD size 5000 != 256000" in out and "unverified" in out


def test_download_through_the_mirror_variable(registry, tmp_path, capsys, monkeypatch, file_server):  # noqa: F811
    elsewhere = WeightFile("alpha", "good.bin", url="https://unreachable.invalid/x/good.bin", size=len(PAYLOAD))
    monkeypatch.setattr(weights, "REGISTRY", [elsewhere])
    monkeypatch.setenv(weights.ENV_MIRROR, file_server.url)
    assert weights_cli.run("download", None, str(tmp_path / "w")) == 0
    assert file_server.requests[-1]["path"] == "/x/good.bin"


def test_manifest_errors_are_reported_without_a_traceback(registry, tmp_path, monkeypatch):
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"gamma/x": {"size": 1}}))
    monkeypatch.setenv(weights.ENV_MANIFEST, str(manifest))
    with pytest.raises(SystemExit, match="unknown file"):
        weights_cli.run("verify", None, None)


def test_unknown_group_is_refused(registry):
    with pytest.raises(SystemExit, match="unknown group"):
        weights_cli.run("list", "gamma", None)
