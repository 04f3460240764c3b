"""Load test: N concurrent clients over gRPC, HTTP and WebSocket with mixed endpoints against a tiny Flow on loopback.

    python benchmarks/load_test.py --clients 32                  # starts `python -m dalle_flow serve --preset tiny`
    python benchmarks/load_test.py --clients 32 --ports 51005 51006 51007   # a Flow already served on 127.0.0.1

Client k speaks protocol k mod 3 and sends `--requests` requests (bounded, and the run stops after `--max-seconds`),
cycling through `/` (1 image per generator), `/encode`, `/upscale`, `/segment`, `/history` and a bad request that
must be refused with its message. Every answer is checked: `ok` = the expected answer, `errors` = an exception where
an answer was expected, `wrong` = an answer that is not the expected one. It prints a table per endpoint (count, ok,
errors, wrong, p50/p95 latency) and the resident memory of every process of the Flow before and after the run.
Only 127.0.0.1 is ever contacted.
"""
from __future__ import annotations

import argparse
import base64
import io
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
PROTOCOLS = ("grpc", "http", "websocket")
ENDPOINTS = ("/", "/encode", "/upscale", "/segment", "/history", "bad")
HOST = "127.0.0.1"


def png_uri(size: int, seed: int) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    image = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def one_request(client, endpoint: str, k: int) -> bool:
    """Send one request; True when the answer is the expected one (raises when there is no answer)."""
    from docarray import Document

    if endpoint == "/":
        docs = client.post("/", Document(text=f"a cat number {k}"), parameters={"num_images": 1, "seed": k})
        return len(docs[0].matches) == 2 and all(m.uri.startswith("data:image/png") for m in docs[0].matches)
    if endpoint == "/encode":
        docs = client.post("/encode", Document(text=f"a dog {k}"))
        return docs[0].embedding is not None and np.asarray(docs[0].embedding).shape == (32,)
    if endpoint == "/upscale":
        docs = client.post("/upscale", Document(uri=png_uri(16, k), text="load test"),
                           parameters={"namespace": "load-test"})
        return docs[0].tags.get("width") == 64 and docs[0].tags.get("stored") is True
    if endpoint == "/segment":
        docs = client.post("/segment", Document(uri=png_uri(24, k), text="the cat"))
        return docs[0].uri.startswith("data:image/png") and docs[0].tags.get("segmented") is True
    if endpoint == "/history":
        docs = client.post("/history", parameters={"limit": 2, "namespace": "load-test"})
        return len(docs) <= 2
    # a bad request must be refused with a message naming the field. Read through `on_error`, which every client
    # calls with the error answer: without it the clients raise, but Jina 3.34's WebSocket client can lose that
    # exception (it cancels its receive task to re-raise it, and when the server has already closed the connection
    # that task is done, so the cancel is a no-op and the call returns no result: the 20 "wrong" of an earlier run)
    refusals = []
    client.post("/", Document(text="x"), parameters={"num_images": "many"}, on_error=refusals.append)
    return len(refusals) == 1 and "num_images: must be" in str(refusals[0].header.status)


def run_client(index: int, ports: dict, requests: int, deadline: float, results: list, lock: threading.Lock):
    from jina import Client

    protocol = PROTOCOLS[index % len(PROTOCOLS)]
    client = Client(host=HOST, port=ports[protocol], protocol=protocol)
    for n in range(requests):
        if time.monotonic() > deadline:
            return
        endpoint = ENDPOINTS[(index + n) % len(ENDPOINTS)]
        started = time.monotonic()
        try:
            outcome = "ok" if one_request(client, endpoint, index * 1000 + n) else "wrong"
        except Exception:  # noqa: BLE001 - counted, the load test goes on
            outcome = "errors"
        with lock:
            results.append((protocol, endpoint, outcome, time.monotonic() - started))


def group_rss_mib(pgid: int) -> float:
    """Resident memory of every process in the Flow's process group."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getpgid(int(pid)) != pgid:
                continue
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration, ProcessLookupError):
            continue
    return total / 1024


def start_tiny_flow(workspace: Path) -> tuple[subprocess.Popen, dict]:
    from tests.conftest import free_ports

    ports = dict(zip(PROTOCOLS, free_ports(3)))
    log = open(workspace / "flow.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "dalle_flow", "serve", "--preset", "tiny", "--ports",
                                *map(str, ports.values()), "--workspace", str(workspace)],
                               stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, start_new_session=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 300
    while "ready to serve" not in (workspace / "flow.log").read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            raise SystemExit(f"the tiny Flow did not start:\n{(workspace / 'flow.log').read_text()[-3000:]}")
        time.sleep(0.5)
    return process, ports


def percentile(values, q) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def report(results, rss_before, rss_after, wall_s, clients):
    rows = defaultdict(list)
    for protocol, endpoint, outcome, seconds in results:
        rows[endpoint].append((outcome, seconds))
        rows[protocol].append((outcome, seconds))
        rows["all"].append((outcome, seconds))
    print(f"\n{clients} clients, {len(results)} requests in {wall_s:.1f} s "
          f"({len(results) / wall_s:.1f} requests/s)\n")
    print(f"| {'requests':<10} | {'count':>5} | {'ok':>5} | {'errors':>6} | {'wrong':>5} | {'p50 ms':>8} | "
          f"{'p95 ms':>8} |")
    print(f"|{'-' * 12}|{'-' * 7}:|{'-' * 7}:|{'-' * 8}:|{'-' * 7}:|{'-' * 10}:|{'-' * 10}:|")
    for name in (*ENDPOINTS, *PROTOCOLS, "all"):
        entries = rows.get(name, [])
        if not entries:
            continue
        count = lambda kind: sum(1 for outcome, _ in entries if outcome == kind)  # noqa: E731
        times = [seconds for _, seconds in entries]
        print(f"| {name:<10} | {len(entries):>5} | {count('ok'):>5} | {count('errors'):>6} | {count('wrong'):>5} | "
              f"{percentile(times, 50):>8.0f} | {percentile(times, 95):>8.0f} |")
    print(f"\nFlow RSS (all its processes): {rss_before:.0f} MiB before, {rss_after:.0f} MiB after "
          f"({rss_after - rss_before:+.0f} MiB)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=21, help="requests per client (default 21)")
    parser.add_argument("--max-seconds", type=float, default=600, help="stop sending after this long (default 600)")
    parser.add_argument("--ports", type=int, nargs=3, metavar=("GRPC", "HTTP", "WEBSOCKET"),
                        help="a Flow already served on 127.0.0.1 (default: start a tiny one)")
    parser.add_argument("--pgid", type=int, help="its process group, for RSS (default: the started Flow's)")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 256 or not 1 <= args.requests <= 1000:
        parser.error("--clients must be 1..256 and --requests 1..1000")
    process = None
    with tempfile.TemporaryDirectory() as workspace:
        if args.ports:
            ports, pgid = dict(zip(PROTOCOLS, args.ports)), args.pgid
        else:
            process, ports = start_tiny_flow(Path(workspace))
            pgid = os.getpgid(process.pid)
        try:
            from jina import Client

            for protocol in PROTOCOLS:  # warm every path once, so "before" is the served state
                for endpoint in ENDPOINTS:
                    one_request(Client(host=HOST, port=ports[protocol], protocol=protocol), endpoint, 0)
            rss_before = group_rss_mib(pgid) if pgid else float("nan")
            results, lock = [], threading.Lock()
            started = time.monotonic()
            deadline = started + args.max_seconds
            with ThreadPoolExecutor(max_workers=args.clients) as pool:
                for index in range(args.clients):
                    pool.submit(run_client, index, ports, args.requests, deadline, results, lock)
            wall_s = time.monotonic() - started
            time.sleep(2)  # let the executors finish releasing memory
            rss_after = group_rss_mib(pgid) if pgid else float("nan")
            report(results, rss_before, rss_after, wall_s, args.clients)
        finally:
            if process is not None:
                os.killpg(process.pid, signal.SIGINT)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
