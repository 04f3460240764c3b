"""Shared test helpers: fixture folders, free ports, a tiny Flow started once per module that needs it."""
from __future__ import annotations

import base64
import io
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES_ROOT = Path(os.environ.get("DALLE_FLOW_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))


def fixture_dirs() -> list[Path]:
    from dalle_flow.parity import find_fixture_dirs

    return find_fixture_dirs(FIXTURES_ROOT) if FIXTURES_ROOT.is_dir() else []


def free_ports(n: int) -> list[int]:
    sockets = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def png_data_uri(image: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


def decode_data_uri(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,"), uri[:40]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def test_image(size=64, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


test_image.__test__ = False  # a helper, not a test


class RunningFlow:
    def __init__(self, flow, ports, workspace, tls=False):
        self.flow = flow
        self.grpc, self.http, self.websocket = ports
        self.workspace = workspace
        self.tls = tls

    def url(self, protocol="grpc") -> str:
        scheme = {"grpc": "grpcs" if self.tls else "grpc", "http": "https" if self.tls else "http",
                  "websocket": "wss" if self.tls else "websocket"}[protocol]
        return f"{scheme}://127.0.0.1:{getattr(self, protocol)}"


READY_TIMEOUT_MS = 240_000  # tiny executors start in seconds; flow.yml itself waits forever for real checkpoints


def start_tiny_flow(workspace: Path, tls_cert=None, tls_key=None, monitoring=False, **toggles) -> RunningFlow:
    """`toggles`: ServeOptions toggle fields; by default every executor of flow.yml."""
    import yaml
    from jina import Flow

    from dalle_flow.flow_config import ServeOptions, flow_dict

    os.environ["DALLE_FLOW_PRESET"] = "tiny"
    ports = free_ports(4)
    options = ServeOptions(ports=tuple(ports[:3]), tls_cert=tls_cert, tls_key=tls_key, monitoring=monitoring,
                           monitoring_port=ports[3] if monitoring else None, workspace=str(workspace),
                           env={"DALLE_FLOW_PRESET": "tiny", "OMP_NUM_THREADS": "1"},
                           **toggles)
    spec = flow_dict(options)
    for executor in spec["executors"]:
        executor["timeout_ready"] = READY_TIMEOUT_MS  # a stuck start fails the test instead of hanging the run
    flow = Flow.load_config(yaml.safe_dump(spec, sort_keys=False))
    flow.start()
    running = RunningFlow(flow, ports[:3], workspace, tls=bool(tls_cert))
    running.monitoring_port = ports[3]
    return running


@pytest.fixture(scope="session")
def tiny_flow(tmp_path_factory):
    running = start_tiny_flow(tmp_path_factory.mktemp("workspace"))
    yield running
    running.flow.close()


def error_text(exc: BaseException) -> str:
    """The server's error message as the client received it (Jina wraps it in a protobuf header)."""
    arg = exc.args[0] if exc.args else None
    status = getattr(arg, "status", None) or getattr(getattr(arg, "header", None), "status", None)
    if status is not None:
        return " ".join([status.description, *status.exception.args])
    return str(exc)
