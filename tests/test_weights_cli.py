"""`python -m dalle_flow weights list|download|verify` against a local file server (offline)."""
import hashlib

import pytest

from dalle_flow import weights_cli
from dalle_flow.serving import weights
from dalle_flow.serving.weights import WeightFile
from tests.test_weights import file_server  # noqa: F401  (fixture: serves 256,000 bytes with Range support)


@pytest.fixture
def registry(monkeypatch, file_server, tmp_path):  # noqa: F811
    url = f"http://127.0.0.1:{file_server.server_port}"
    payload = file_server.payload
    entries = [
        WeightFile("alpha", "good.bin", url=f"{url}/good.bin", size=len(payload),
                   sha256=hashlib.sha256(payload).hexdigest()),
        WeightFile("alpha", "unchecked.bin", url=f"{url}/unchecked.bin", approx_size=len(payload)),
        WeightFile("beta", "bad.bin", url=f"{url}/bad.bin", sha256="0" * 64),
    ]
    monkeypatch.setattr(weights, "REGISTRY", entries)
    monkeypatch.setattr(weights_cli, "REGISTRY", entries)
    monkeypatch.setattr(weights_cli, "GROUPS", ("alpha", "beta"))
    monkeypatch.setattr(weights, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.delenv("DALLE_FLOW_WEIGHTS_DIR", raising=False)
    return entries


def test_list_is_offline_and_counts_what_is_missing(registry, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DALLE_FLOW_OFFLINE", "1")
    assert weights_cli.run("list", None, str(tmp_path / "w")) == 0
    out = capsys.readouterr().out
    assert out.count("missing") >= 3 and "missing: 3 file(s)" in out


def test_download_resumes_checks_and_reports(registry, tmp_path, capsys, file_server):  # noqa: F811
    target_dir = tmp_path / "w"
    (target_dir / "alpha").mkdir(parents=True)
    (target_dir / "alpha" / "good.bin.part").write_bytes(file_server.payload[:5000])  # an interrupted download
    assert weights_cli.run("download", "alpha,beta", str(target_dir)) == 1  # bad.bin fails its checksum
    out = capsys.readouterr().out
    assert (target_dir / "alpha" / "good.bin").read_bytes() == file_server.payload
    assert "FAILED" in out and "SHA-256" in out
    assert not (target_dir / "beta" / "bad.bin").exists()
    assert weights_cli.run("verify", "alpha", str(target_dir)) == 0
    out = capsys.readouterr().out
    assert "ok" in out and "present" in out


def test_verify_detects_a_corrupted_file(registry, tmp_path, capsys):
    folder = tmp_path / "w" / "alpha"
    folder.mkdir(parents=True)
    (folder / "good.bin").write_bytes(b"truncated")
    assert weights_cli.run("verify", "alpha", str(tmp_path / "w")) == 1
    assert "BAD size" in capsys.readouterr().out


def test_unknown_group_is_refused(registry):
    with pytest.raises(SystemExit, match="unknown group"):
        weights_cli.run("list", "gamma", None)
