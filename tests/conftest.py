"""Shared test helpers: fixture folders, free ports, scripts and executors loaded in-process, and a tiny Flow started
once per session for the tests that need one."""
from __future__ import annotations

import base64
import importlib.util
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
# the repository carries its own copy of the parity fixtures, so a fresh clone tests its loaders with nothing beside it
FIXTURES_ROOT = Path(os.environ.get("DALLE_FLOW_FIXTURES", REPO_ROOT / "tests" / "fixtures" / "parity"))


def load_script(relative: str):
    """A repository script (tools/, benchmarks/, executors/) imported as a module, so tests can call its functions
    (an executor without a Flow)."""
    spec = importlib.util.spec_from_file_location(Path(relative).stem, REPO_ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    """A Flow served by `python -m dalle_flow serve` in its own process group.

    Flows run out of process: Jina checks readiness with gRPC from the process that starts a Flow, and after many
    client calls in the test process that check could hang (grpc's asyncio state does not survive closed loops)."""

    def __init__(self, process, ports, workspace, log_path, tls=False, monitoring_port=None):
        self.process = process
        self.grpc, self.http, self.websocket = ports
        self.workspace = workspace
        self.log_path = log_path
        self.tls = tls
        self.monitoring_port = monitoring_port

    def url(self, protocol="grpc") -> str:
        scheme = {"grpc": "grpcs" if self.tls else "grpc", "http": "https" if self.tls else "http",
                  "websocket": "wss" if self.tls else "websocket"}[protocol]
        return f"{scheme}://127.0.0.1:{getattr(self, protocol)}"

    def log_tail(self, chars=4000) -> str:
        return Path(self.log_path).read_text(errors="replace")[-chars:]

    def log_size(self) -> int:
        return len(Path(self.log_path).read_text(errors="replace"))

    def log_words(self, since: int = 0) -> str:
        """The log from offset `since` as one line: Jina wraps its log lines and puts times in between."""
        text = Path(self.log_path).read_text(errors="replace")[since:]
        return " ".join(re.sub(r"\[\d\d/\d\d/\d\d [\d:]+\]", "", text).split())

    def close(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # Jina closes its executors on an interrupt
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


READY_TIMEOUT_S = 240  # tiny executors start in seconds; a stuck start fails the test instead of hanging the run


def start_tiny_flow(workspace: Path, tls_cert=None, tls_key=None, monitoring=False, replicas=None, clip_server=None,
                    **toggles) -> RunningFlow:
    """`toggles`: ServeOptions toggle fields (disable_dalle_mega=True, enable_clipseg=False, ...); by default every
    executor of flow.yml."""
    workspace = Path(workspace)
    workspace.mkdir(parents=True, exist_ok=True)
    ports = free_ports(4)
    args = [sys.executable, "-m", "dalle_flow", "serve", "--preset", "tiny", "--ports", *map(str, ports[:3]),
            "--workspace", str(workspace)]
    if tls_cert:
        args += ["--tls-cert", str(tls_cert), "--tls-key", str(tls_key)]
    if monitoring:
        args += ["--monitoring", "--monitoring-port", str(ports[3])]
    for name, value in toggles.items():
        flag = name if name.startswith("disable_") else name.replace("enable_", "disable_", 1)
        if value == name.startswith("disable_"):
            args.append("--" + flag.replace("_", "-"))
    if clip_server:
        args += ["--clip-server", clip_server]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           **{f"DALLE_FLOW_REPLICAS_{name.upper()}": str(n) for name, n in (replicas or {}).items()}}
    log_path = workspace / f"flow-{ports[0]}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                   cwd=REPO_ROOT, start_new_session=True)
    running = RunningFlow(process, ports[:3], workspace, log_path, tls=bool(tls_cert),
                          monitoring_port=ports[3] if monitoring else None)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while "ready to serve" not in log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            running.close()
            raise RuntimeError(f"the tiny Flow did not start (exit code {process.returncode}):\n{running.log_tail()}")
        time.sleep(0.5)
    return running


@pytest.fixture(scope="session")
def tiny_flow(tmp_path_factory):
    running = start_tiny_flow(tmp_path_factory.mktemp("workspace"))
    yield running
    running.close()


def error_text(exc: BaseException) -> str:
    """The server's error message as the client received it (Jina wraps it in a protobuf header)."""
    arg = exc.args[0] if exc.args else None
    status = getattr(arg, "status", None) or getattr(getattr(arg, "header", None), "status", None)
    if status is not None:
        return " ".join([status.description, *status.exception.args])
    return str(exc)
