"""A Flow of its own: TLS over gRPC and HTTPS, and monitoring (the store's restart: tests/test_store.py)."""
from __future__ import annotations

import subprocess
import urllib.request

import pytest
from docarray import Document

from tests.conftest import start_tiny_flow

pytestmark = pytest.mark.flow


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def test_tls_grpcs_and_https_and_monitoring(tmp_path, tls_files, monkeypatch):
    cert, key = tls_files
    flow = start_tiny_flow(tmp_path, tls_cert=str(cert), tls_key=str(key), monitoring=True)
    try:
        # grpcio reads the trusted roots from this variable; a self-signed certificate must be trusted explicitly
        monkeypatch.setenv("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", str(cert))
        result = Document(text="secure").post(flow.url("grpc"))
        assert result.embedding is not None
        out = subprocess.run(["curl", "-s", "--cacert", str(cert), "-X", "POST", f"{flow.url('http')}/post",
                              "-H", "Content-Type: application/json",
                              "-d", '{"data": [{"text": "secure"}], "execEndpoint": "/"}'],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        assert '"embedding"' in out
        plain = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                f"http://127.0.0.1:{flow.http}/post"], capture_output=True, text=True, timeout=30)
        # plain HTTP is not served when TLS is on: the port accepts the connection (curl's 7 would be "refused"),
        # then the TLS server drops the plain request: empty reply (52) or reset (56), and no HTTP status (000)
        assert (plain.returncode, plain.stdout) in ((52, "000"), (56, "000")), (plain.returncode, plain.stdout)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{flow.monitoring_port}/", timeout=10).read().decode()
        assert "jina" in metrics or "python_info" in metrics
    finally:
        flow.close()
