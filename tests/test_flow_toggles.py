"""Toggles: the rewiring of every combination (no Flow started), the environment and command line, then three
tiny starts: a Flow without DALL·E Mega and SwinIR, a stand-in CLIP-as-service, and a Flow without GLID-3 XL that
uses it with two DALL·E replicas."""
from __future__ import annotations

import io
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import yaml
from docarray import Document, DocumentArray
from jina import Client

from dalle_flow.deploy import flow_graph
from dalle_flow.__main__ import main
from dalle_flow.deploy.flow_config import FLOW_YML, REPO_ROOT, TOGGLES, ServeOptions, flow_dict, toggles_from_env
from tests.conftest import decode_data_uri, error_text, free_ports, png_data_uri, start_tiny_flow, test_image

FLAGS = [attr for attr, _, _ in TOGGLES]
COMBINATIONS = [dict(zip(FLAGS, values)) for values in itertools.product([False, True], repeat=len(FLAGS))]


def executors(spec: dict) -> dict[str, list[str]]:
    return {e["name"]: e["needs"] for e in spec["executors"]}


def full_graph() -> list[dict]:
    """flow.yml: every executor, the graph every toggle starts from."""
    with open(FLOW_YML) as f:
        return flow_graph.normalize_needs(yaml.safe_load(f)["executors"])


# ---------------------------------------------------------------- rewiring, every combination

@pytest.mark.parametrize("toggles", COMBINATIONS, ids=lambda t: "-".join(k for k, v in t.items() if v) or "none")
def test_every_combination_keeps_what_depended_on_what(toggles):
    off = {name for attr, _, name in TOGGLES if toggles[attr] == attr.startswith("disable_")}
    if {"dalle", "diffusion"} <= off:
        with pytest.raises(ValueError, match="at least one generator must stay enabled"):
            flow_dict(ServeOptions(**toggles))
        return
    spec = flow_dict(ServeOptions(**toggles))
    got = spec["executors"]
    full = full_graph()
    assert [e["name"] for e in got] == [n for n in flow_graph.names(full) if n not in off]
    for executor in got:
        # what ran before an executor still does, through whatever remains, and nothing else was added
        before = flow_graph.ancestors(full, executor["name"]) - off
        assert flow_graph.ancestors(got, executor["name"]) == before, executor["name"]
        needs = executor["needs"]  # and no redundant edge: no need that another need already depends on
        assert len(set(needs)) == len(needs)
        assert not any(a in flow_graph.ancestors(got, b) for a in needs for b in needs if a != b), needs
    from jina import Flow

    Flow.load_config(yaml.safe_dump(spec, sort_keys=False))  # Jina accepts the topology (nothing is started)


CLIP_CONFIGS = REPO_ROOT / "executors" / "clip"


def clip_executors(uses_by_name: dict[str, str]) -> list[str]:
    """Executors whose config is one of executors/clip/ (local CLIP, or the CLIP-as-service forwarder)."""
    return [name for name, uses in uses_by_name.items() if CLIP_CONFIGS in Path(uses).parents]


@pytest.mark.parametrize("clip_server", [None, "grpcs://api.clip.jina.ai:2096"])
@pytest.mark.parametrize("toggles", [t for t in COMBINATIONS if not (t["disable_dalle_mega"] and t["disable_glid3xl"])],
                         ids=lambda t: "-".join(k for k, v in t.items() if v) or "none")
def test_the_flow_holds_one_clip_in_every_combination(toggles, clip_server):
    """One CLIP executor, after every generator: it serves /encode and /rank and ranks `/`'s candidates (issue #12:
    clip_encoder and rerank each held their own ViT-L/14@336, 0.8 GiB of weights, activations and a CUDA context)."""
    from dalle_flow.deploy.k8s import IMAGE_ROOT, k8s_flow

    options = ServeOptions(**toggles, clip_server=clip_server)
    spec = flow_dict(options)
    assert clip_executors({e["name"]: e["uses"] for e in spec["executors"]}) == ["rerank"]
    generators = {"dalle", "diffusion"} & set(flow_graph.names(spec["executors"]))
    assert generators <= flow_graph.ancestors(spec["executors"], "rerank")
    _, uses_paths, _ = k8s_flow(options, "registry.example.com/dalle-flow:test")
    in_image = {name: str(REPO_ROOT / Path(path).relative_to(IMAGE_ROOT)) for name, path in uses_paths.items()
                if path.startswith(IMAGE_ROOT)}
    assert clip_executors(in_image) == ["rerank"]


def test_flow_yml_served_as_is_holds_one_clip():
    with open(FLOW_YML) as f:
        uses = {e["name"]: str(FLOW_YML.parent / e["uses"]) for e in yaml.safe_load(f)["executors"]}
    assert clip_executors(uses) == ["rerank"]


def test_the_issue_examples_of_rewiring():
    assert executors(flow_dict(ServeOptions(disable_dalle_mega=True)))["rerank"] == ["diffusion"]
    without_diffusion = flow_dict(ServeOptions(disable_glid3xl=True))
    assert "dalle" in executors(without_diffusion)["rerank"]
    assert executors(without_diffusion)["dalle"] == ["gateway"]
    assert executors(flow_dict(ServeOptions(disable_swinir=True)))["store"] == ["rerank"]
    assert executors(flow_dict(ServeOptions()))["clipseg"] == ["store"]
    assert "clipseg" not in executors(flow_dict(ServeOptions(enable_clipseg=False)))


def test_flow_yml_itself_serves_the_default_set():
    with open(FLOW_YML) as f:
        names = [e["name"] for e in yaml.safe_load(f)["executors"]]
    assert {"dalle", "diffusion", "upscaler", "rerank", "store", "clipseg"} <= set(names)
    assert [e["name"] for e in flow_dict(ServeOptions())["executors"]] == names


def test_graph_removal_is_generic():
    graph = flow_graph.normalize_needs([
        {"name": "a"}, {"name": "b", "needs": "gateway"}, {"name": "m", "needs": ["a", "b"]},
        {"name": "x", "needs": ["m"]}, {"name": "y", "needs": ["m", "a"]}])
    assert flow_graph.names(graph) == ["a", "b", "m", "x", "y"] and graph[0]["needs"] == ["gateway"]
    rest = flow_graph.remove_executor(graph, "m")
    assert executors({"executors": rest}) == {"a": ["gateway"], "b": ["gateway"], "x": ["a", "b"], "y": ["a", "b"]}
    assert executors({"executors": flow_graph.remove_executor(rest, "a")})["x"] == ["b"]  # gateway is b's ancestor
    assert flow_graph.sinks(rest) == ["x", "y"]
    with pytest.raises(ValueError, match="no such executor"):
        flow_graph.remove_executor(graph, "nope")
    with pytest.raises(ValueError, match="not listed before it"):
        flow_graph.normalize_needs([{"name": "a", "needs": ["b"]}, {"name": "b"}])


# ---------------------------------------------------------------- settings and the environment

def test_environment_sets_toggles_devices_gpus_replicas():
    # every toggle set away from its default, so a variable that is not read fails the test
    env = {"DISABLE_DALLE_MEGA": "1", "DISABLE_SWINIR": "no", "ENABLE_CLIPSEG": "OFF",
           "DALLE_FLOW_DEVICE_DIFFUSION": "cuda:1", "DALLE_FLOW_CUDA_DEVICES_RERANK": "RR",
           "DALLE_FLOW_CUDA_DEVICES_CLIPSEG": "1", "DALLE_FLOW_REPLICAS_DIFFUSION": "2",
           "DALLE_FLOW_REPLICAS_DALLE": "3"}
    defaults = ServeOptions()
    assert (defaults.disable_dalle_mega, defaults.disable_swinir, defaults.enable_clipseg) == (False, False, True)
    options = ServeOptions(**toggles_from_env(env))
    assert (options.disable_dalle_mega, options.disable_swinir, options.enable_clipseg) == (True, False, False)
    spec = {e["name"]: e for e in flow_dict(options)["executors"]}
    assert "dalle" not in spec and "clipseg" not in spec  # their other settings are ignored with them
    assert spec["diffusion"]["uses_with"] == {"device": "cuda:1"} and spec["diffusion"]["replicas"] == 2
    assert spec["rerank"]["env"] == {"CUDA_VISIBLE_DEVICES": "RR"}
    assert "replicas" not in spec["upscaler"] and "uses_with" not in spec["upscaler"]
    assert toggles_from_env({"ENABLE_CLIPSEG": "0"})["enable_clipseg"] is False
    assert toggles_from_env({"ENABLE_CLIPSEG": "0", "DISABLE_SWINIR": "yes"})["disable_swinir"] is True
    assert toggles_from_env({}) == {**{f: f == "enable_clipseg" for f in FLAGS}, "devices": {}, "cuda_devices": {}, "replicas": {},
                                    "clip_server": None}


@pytest.mark.parametrize("env, message", [
    ({"DISABLE_GLID3XL": "maybe"}, "DISABLE_GLID3XL: must be one of 1/true/yes/on or 0/false/no/off, got 'maybe'"),
    ({"DALLE_FLOW_REPLICAS_DALE": "2"}, "DALLE_FLOW_REPLICAS_DALE: no executor named 'DALE'"),
    ({"DALLE_FLOW_REPLICAS_DALLE": "two"}, "DALLE_FLOW_REPLICAS_DALLE: must be an integer between 1 and 16, got 'two'"),
    ({"DALLE_FLOW_REPLICAS_DALLE": "0"}, "must be an integer between 1 and 16, got '0'"),
    ({"DALLE_FLOW_REPLICAS_STORE": "2"}, "DALLE_FLOW_REPLICAS_STORE: store must run as one replica"),
    ({"DALLE_FLOW_DEVICE_DALLE": "gpu0"}, "DALLE_FLOW_DEVICE_DALLE: must be auto, cpu, cuda or cuda:N, got 'gpu0'"),
    ({"DALLE_FLOW_DEVICE_STORE": "cpu"}, "DALLE_FLOW_DEVICE_STORE: store runs no model here"),
    ({"DALLE_FLOW_CUDA_DEVICES_DALLE": "cuda:0"}, "DALLE_FLOW_CUDA_DEVICES_DALLE: must be GPU indices like 1"),
    ({"DALLE_FLOW_CLIP_SERVER": "api.clip.jina.ai"}, "DALLE_FLOW_CLIP_SERVER: must be SCHEME://HOST:PORT"),
    ({"DALLE_FLOW_CLIP_SERVER": "grpcs://host:2096", "DALLE_FLOW_DEVICE_RERANK": "cpu"},
     "DALLE_FLOW_DEVICE_RERANK: rerank runs no model here"),
    ({"DISABLE_DALLE_MEGA": "1", "DISABLE_GLID3XL": "on"}, "at least one generator must stay enabled"),
    ({"DALLE_FLOW_DEVICE_CLIP_ENCODER": "cpu"},
     "DALLE_FLOW_DEVICE_CLIP_ENCODER: no executor named 'CLIP_ENCODER' (clip_encoder is part of rerank now"),
])
def test_bad_settings_are_refused_with_the_variable_named(env, message):
    with pytest.raises(ValueError) as err:
        flow_dict(ServeOptions(**toggles_from_env(env)))
    assert message in str(err.value)


def test_external_clip_server_replaces_local_clip_with_forwarders():
    spec = {e["name"]: e for e in flow_dict(ServeOptions(clip_server="grpcs://api.clip.jina.ai:2096"))["executors"]}
    assert spec["rerank"]["uses"] == str(REPO_ROOT / "executors" / "clip" / "remote.yml")
    assert spec["rerank"]["uses_with"] == {"server": "grpcs://api.clip.jina.ai:2096"}
    assert spec["diffusion"]["uses"].endswith("glid3/config.yml")


def run_cli(*argv, env=None, monkeypatch=None) -> tuple[int, str, str]:
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_flow_yaml_command_prints_what_jina_serves(monkeypatch, tmp_path):
    code, out, _ = run_cli("flow-yaml", "--disable-swinir", "--disable-clipseg",
                           env={"DISABLE_DALLE_MEGA": "1", "DALLE_FLOW_REPLICAS_RERANK": "2"},
                           monkeypatch=monkeypatch)
    spec = yaml.safe_load(out)
    assert code == 0 and [e["name"] for e in spec["executors"]] == ["diffusion", "rerank", "store"]
    assert executors(spec)["store"] == ["rerank"] and spec["executors"][1]["replicas"] == 2
    code, _, _ = run_cli("flow-yaml", "--disable-swinir", "--disable-clipseg", "-o", str(tmp_path / "f.yml"),
                         monkeypatch=monkeypatch)
    assert code == 0 and yaml.safe_load((tmp_path / "f.yml").read_text()) == spec
    code, out, err = run_cli("flow-yaml", env={"DISABLE_GLID3XL": "1", "DISABLE_DALLE_MEGA": "1"},
                             monkeypatch=monkeypatch)
    assert code == 2 and out == "" and "error: DISABLE_DALLE_MEGA and DISABLE_GLID3XL" in err


# ---------------------------------------------------------------- started Flows (tiny preset)

def healthcheck_command(port: int) -> list[str]:
    """The Dockerfile's HEALTHCHECK, pointed at a test Flow's gateway."""
    text = (REPO_ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    (line,) = [line for line in text.splitlines() if line.startswith("HEALTHCHECK")]
    command = yaml.safe_load(line.split(" CMD ", 1)[1])  # the exec form is a JSON (so YAML) list
    assert "grpc://127.0.0.1:51005" in command
    return [str(Path(sys.executable).with_name("jina")) if c == "jina" else c.replace("51005", str(port))
            for c in command]


def healthy(port: int) -> bool:
    return subprocess.run(healthcheck_command(port), capture_output=True, timeout=120).returncode == 0


WAITS_FOR_GO = """
import os, time
from jina import Executor, requests

class WaitsForGo(Executor):
    # stands for a model still loading: the constructor returns once the test creates the file `go`
    def __init__(self, go: str, **kwargs):
        super().__init__(**kwargs)
        deadline = time.time() + 120
        while not os.path.exists(go) and time.time() < deadline:
            time.sleep(0.2)

    @requests(on="/x")
    def x(self, docs, **kwargs):
        pass
"""


@pytest.mark.flow
def test_health_check_waits_for_every_executor(tmp_path):
    (tmp_path / "slow.py").write_text(WAITS_FOR_GO)
    (port,) = free_ports(1)
    flow_file = tmp_path / "flow.yml"
    flow_file.write_text(yaml.safe_dump({"jtype": "Flow", "with": {"port": port}, "executors": [
        {"name": "slow", "uses": "WaitsForGo", "py_modules": [str(tmp_path / "slow.py")],
         "uses_with": {"go": str(tmp_path / "go")}, "timeout_ready": -1}]}, sort_keys=False))
    process = subprocess.Popen([str(Path(sys.executable).with_name("jina")), "flow", "--uses", str(flow_file)],
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:  # until the gateway listens
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert process.poll() is None and time.time() < deadline
            time.sleep(0.5)
        for _ in range(2):  # the gateway answers, its executor is still "loading"
            time.sleep(3)
            assert not healthy(port)
        (tmp_path / "go").touch()
        while not healthy(port):
            assert time.time() < deadline
            time.sleep(1)
    finally:
        (tmp_path / "go").touch()  # an executor stuck in its constructor would not stop on SIGINT
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the Flow and its executor processes, started by this test


@pytest.mark.flow
def test_flow_without_dalle_and_swinir_with_clipseg(tmp_path):
    flow = start_tiny_flow(tmp_path, disable_dalle_mega=True, disable_swinir=True, enable_clipseg=True)
    try:
        result = Document(text="a lighthouse").post(flow.url("grpc"), parameters={"num_images": 2, "steps": 6})
        assert len(result.matches) == 2 and {m.tags["generator"] for m in result.matches} == {"GLID3-XL"}
        scores = [m.scores["clip_score"].value for m in result.matches]
        assert scores == sorted(scores, reverse=True)  # rerank still ranks, with diffusion as its only input
        image = test_image(24, seed=2)
        served = Document(uri=png_data_uri(image), text="kept").post(flow.url("grpc") + "/upscale")
        np.testing.assert_array_equal(decode_data_uri(served.uri), image)  # no upscaler: stored as it came
        history = Client(host=flow.url("grpc")).post("/history", parameters={"limit": 1})
        assert history[0].uri == served.uri
        segmented = Document(uri=png_data_uri(image), text="a thing").post(flow.url("grpc") + "/segment")
        assert decode_data_uri(segmented.uri).shape == (24, 24, 4)
        assert healthy(flow.grpc)  # the Dockerfile's HEALTHCHECK
    finally:
        flow.close()
    assert not healthy(flow.grpc)


@pytest.fixture(scope="module")
def clip_service(tmp_path_factory):
    """A stand-in CLIP-as-service: this project's CLIP encoder, which speaks its protocol (/encode, /rank), served by
    `jina executor` in its own process group (see RunningFlow for why nothing is started in the test process)."""
    (port,) = free_ports(1)
    jina = str(Path(sys.executable).parent / "jina")
    log_path = tmp_path_factory.mktemp("clip_service") / "executor.log"
    env = {**os.environ, "DALLE_FLOW_PRESET": "tiny", "OMP_NUM_THREADS": "1"}
    with open(log_path, "w") as log:
        process = subprocess.Popen([jina, "executor", "--uses", str(REPO_ROOT / "executors" / "clip" / "config.yml"),
                                    "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env, cwd=REPO_ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while subprocess.run([jina, "ping", "executor", f"127.0.0.1:{port}", "--attempts", "1"],
                             capture_output=True).returncode != 0:
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(1)
        yield f"grpc://127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.mark.flow
def test_flow_without_glid3_using_an_external_clip_service(tmp_path, clip_service):
    flow = start_tiny_flow(tmp_path, disable_glid3xl=True, clip_server=clip_service, replicas={"dalle": 2})
    try:
        results = DocumentArray(Document(text=t) for t in ("a red square", "a blue circle"))
        for result in Client(host=flow.url("grpc")).post("/", inputs=results, parameters={"num_images": 3}):
            assert np.asarray(result.embedding).shape == (32,)  # the prompt, embedded by the service
            assert {m.tags["generator"] for m in result.matches} == {"DALLE-mega"} and len(result.matches) == 3
            scores = [m.scores["clip_score"].value for m in result.matches]
            assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-5  # the service's /rank
            assert all(m.embedding is None and m.uri.startswith("data:image/png") for m in result.matches)
        # /rank is the service's: the same matches back (ids kept), ordered and scored as the service does it
        doc = Document(text="a red square", matches=[Document(uri=png_data_uri(test_image(16, seed=s)))
                                                     for s in range(3)])
        ranked = doc.post(flow.url("grpc") + "/rank")
        direct = Document(text="a red square", matches=[Document(uri=m.uri) for m in doc.matches]).post(
            clip_service + "/rank")
        assert sorted(m.id for m in ranked.matches) == sorted(m.id for m in doc.matches)
        assert [m.scores["clip_score"].value for m in ranked.matches] == pytest.approx(
            [m.scores["clip_score"].value for m in direct.matches], abs=1e-5)
        encoded = Document(text="a zebra").post(flow.url("grpc") + "/encode")
        assert np.allclose(encoded.embedding, Document(text="a zebra").post(clip_service + "/encode").embedding,
                           atol=1e-5)
        # a prompt that reaches rerank without candidates is embedded all the same, as local CLIP does it
        alone = Client(host=flow.url("grpc")).post("/", Document(text="a zebra"), target_executor="rerank")[0]
        assert len(alone.matches) == 0 and np.allclose(alone.embedding, encoded.embedding, atol=1e-5)
        with pytest.raises(Exception) as err:
            Document(uri="https://example.com/cat.png").post(flow.url("grpc") + "/encode")
        assert "only inline images are accepted" in error_text(err.value)
        untouched = Document(uri=png_data_uri(test_image(16)), text="x").post(flow.url("grpc") + "/upscale")
        assert untouched.embedding is None  # other endpoints never reach the service
    finally:
        flow.close()
