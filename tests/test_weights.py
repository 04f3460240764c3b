import http.server
import threading

import pytest

from dalle_flow.serving import weights
from dalle_flow.serving.weights import MissingWeightsError, WeightFile


def test_explicit_dir_is_searched_first(tmp_path, monkeypatch):
    (tmp_path / "glid3").mkdir()
    (tmp_path / "glid3" / "bert.pt").write_bytes(b"x")
    monkeypatch.setenv("DALLE_FLOW_WEIGHTS_DIR", str(tmp_path))
    assert weights.resolve("glid3", "bert.pt") == tmp_path / "glid3" / "bert.pt"


def test_missing_offline_names_file_places_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("DALLE_FLOW_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("DALLE_FLOW_OFFLINE", "1")
    monkeypatch.setattr(weights, "CACHE_DIR", tmp_path / "cache")
    with pytest.raises(MissingWeightsError) as err:
        weights.resolve("swinir", "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth")
    text = str(err.value)
    assert "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth" in text
    assert str(tmp_path / "swinir" / "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth") in text
    assert "python -m dalle_flow weights download --only swinir" in text


def test_hf_model_missing_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(MissingWeightsError, match="openai/clip-vit-large-patch14-336"):
        weights.resolve_hf_model("clip", "openai/clip-vit-large-patch14-336", weights_dir=tmp_path)


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        data = self.server.payload
        start = 0
        if "Range" in self.headers:
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture
def file_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    server.payload = bytes(range(256)) * 1000
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def test_download_resumes_and_checks_sha256(tmp_path, file_server):
    url = f"http://127.0.0.1:{file_server.server_port}/f.bin"
    target = tmp_path / "f.bin"
    partial = tmp_path / "f.bin.part"
    partial.write_bytes(file_server.payload[:1000])
    good = WeightFile("t", "f.bin", url=url, size=len(file_server.payload))
    import hashlib

    sha = hashlib.sha256(file_server.payload).hexdigest()
    weights.fetch_url(url, target, good.size, sha, progress=False)
    assert target.read_bytes() == file_server.payload and not partial.exists()
    with pytest.raises(OSError, match="SHA-256"):
        weights.fetch_url(url, tmp_path / "g.bin", None, "0" * 64, progress=False)
    assert not (tmp_path / "g.bin").exists() and not (tmp_path / "g.bin.part").exists()
