"""`python -m dalle_flow k8s DIR [...]`: Kubernetes manifests for the Flow, made by `jina export kubernetes`.

1. The Flow with the toggles (same environment variables as `serve`), every executor as `docker://IMAGE` (one image,
   the repository's Dockerfile, holds them all), with Jina's own `gpus` field (it becomes `nvidia.com/gpu` limits)
   and a finite `timeout_ready` (Kubernetes cannot wait forever; the start-up probe is derived from it).
2. `jina export kubernetes` on that YAML.
3. What Jina's export cannot say, patched in: each executor's `--uses` path inside the image (Jina assumes one image
   per executor with its config.yml in the working directory), the gateway's class (flow.yml's `DalleFlowGateway`,
   from the same image), GPU requests next to the limits, node selectors on
   the GPU pods, the weights volume (an existing PersistentVolumeClaim, read-only, as DALLE_FLOW_WEIGHTS_DIR) and the
   store's workspace volume.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import yaml

from dalle_flow.deploy.flow_config import REPO_ROOT, ServeOptions, _accepts_device, flow_dict, merged_hint

IMAGE_ROOT = "/app"  # the Dockerfile's WORKDIR: the repository's files inside the image
WEIGHTS_MOUNT = "/weights"
WORKSPACE_MOUNT = "/data/workspace"
TIMEOUT_READY_MS = 30 * 60 * 1000  # real checkpoints from a cold volume take minutes; Jina's own default is 10
MAX_GPUS = 8
GATEWAY = "gateway"  # the gateway's name in Jina's export


NETWORK_POLICY_FILE = Path("network-policy") / "network-policy.yml"  # beside the folders jina export writes


def dns_name(name: str) -> str:
    """The name Jina gives an executor's Kubernetes objects (jina.orchestrate.deployments.config.helper)."""
    return name.replace("/", "-").replace("_", "-").lower()


def k8s_flow(options: ServeOptions, image: str, gpus: dict[str, int] | None = None) -> tuple[dict, dict, dict]:
    """(Flow spec to export, executor -> `uses` path inside the image, executor -> GPUs it requests)."""
    if options.cuda_devices:
        raise ValueError("DALLE_FLOW_CUDA_DEVICES_*: on Kubernetes each pod sees only the GPUs it requests; "
                         "choose how many with --gpus NAME=N instead")
    if options.tls_cert or options.ports:
        raise ValueError("TLS and ports are the gateway Service's and Ingress's business on Kubernetes")
    spec = flow_dict(replace(options, loopback_executors=False))  # pods listen on their own address
    names = [e["name"] for e in spec["executors"]]
    unknown = sorted(set(gpus or {}) - set(names))
    if unknown:
        hints = "".join(merged_hint(name) for name in unknown)
        raise ValueError(f"--gpus: no executor named {', '.join(unknown)} in this Flow{hints}; it has "
                         f"{', '.join(names)}")
    uses_paths, gpu_counts = {}, {}
    gateway = spec.get("gateway") or {}
    if gateway.get("uses"):  # Jina exports a custom gateway only from an image; its class is patched back in
        uses_paths[GATEWAY] = gateway["uses"]
        gateway["uses"] = f"docker://{image}"
    for executor in spec["executors"]:
        name = executor["name"]
        local_uses = executor["uses"]
        uses_paths[name] = f"{IMAGE_ROOT}/{Path(local_uses).resolve().relative_to(REPO_ROOT).as_posix()}"
        executor["uses"] = f"docker://{image}"
        count = (gpus or {}).get(name, 1 if _accepts_device(local_uses) else 0)
        if not isinstance(count, int) or not 0 <= count <= MAX_GPUS:
            raise ValueError(f"--gpus {name}: must be an integer between 0 and {MAX_GPUS}, got {count!r}")
        if count:
            executor["gpus"] = count
            gpu_counts[name] = count
        if executor.get("timeout_ready", 0) == -1:
            executor["timeout_ready"] = TIMEOUT_READY_MS
        if "workspace" in executor:
            executor["workspace"] = WORKSPACE_MOUNT
    return spec, uses_paths, gpu_counts


def export(spec: dict, out_dir: Path, namespace: str, image: str) -> None:
    """Run `jina export kubernetes` on the spec; the gateway runs from the same image (same Jina, no registry
    look-up for Jina's own gateway image)."""
    with tempfile.TemporaryDirectory() as tmp:
        flow_file = Path(tmp) / "flow.yml"
        flow_file.write_text(yaml.safe_dump(spec, sort_keys=False))
        jina = Path(sys.executable).with_name("jina")
        result = subprocess.run([str(jina) if jina.exists() else "jina", "export", "kubernetes", str(flow_file),
                                 str(out_dir), "--k8s-namespace", namespace],
                                env={**os.environ, "JINA_GATEWAY_IMAGE": image}, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"jina export kubernetes failed:\n{result.stdout}\n{result.stderr}")


def patch_manifests(out_dir: Path, uses_paths: dict[str, str], gpu_counts: dict[str, int],
                    node_selector: dict[str, str] | None = None, weights_pvc: str | None = None,
                    workspace_pvc: str | None = None) -> list[Path]:
    """Patch the exported Deployments/StatefulSets in place; returns the files changed."""
    by_dns = {dns_name(name): name for name in uses_paths}
    changed, patched = [], set()
    for path in sorted(out_dir.rglob("*.yml")):
        docs = list(yaml.safe_load_all(path.read_text()))
        touched = False
        for doc in docs:
            if not doc or doc.get("kind") not in ("Deployment", "StatefulSet"):
                continue
            touched |= _split_probe_options(doc["spec"]["template"]["spec"]["containers"])
            name = by_dns.get(doc["metadata"]["name"])
            if name is None:
                continue  # Jina's own gateway: nothing to patch
            pod = doc["spec"]["template"]["spec"]
            container = pod["containers"][0]
            args = container["args"]
            at = args.index("--uses") + 1
            if args[at] != "config.yml":
                raise RuntimeError(f"{path}: expected `--uses config.yml` from jina export, got {args[at]!r}")
            args[at] = uses_paths[name]
            touched = True
            patched.add(name)
            if name == GATEWAY:
                continue
            if name in gpu_counts:
                resources = container.setdefault("resources", {})
                limits = resources.setdefault("limits", {})
                if str(limits.get("nvidia.com/gpu")) != str(gpu_counts[name]):
                    raise RuntimeError(f"{path}: jina export did not set the GPU limit of {name}")
                # extended resources take requests from limits, but say so: schedulers and readers look here
                resources.setdefault("requests", {})["nvidia.com/gpu"] = limits["nvidia.com/gpu"]
                if node_selector:
                    pod["nodeSelector"] = {**pod.get("nodeSelector", {}), **node_selector}
            if weights_pvc and _is_model(uses_paths[name]):
                _mount(pod, container, "weights", weights_pvc, WEIGHTS_MOUNT, read_only=True)
                container.setdefault("env", []).append({"name": "DALLE_FLOW_WEIGHTS_DIR", "value": WEIGHTS_MOUNT})
            if workspace_pvc and "--workspace" in args:
                _mount(pod, container, "workspace", workspace_pvc, WORKSPACE_MOUNT, read_only=False)
                if doc["kind"] == "Deployment":  # a ReadWriteOnce volume cannot be held by old and new pod at once
                    doc["spec"]["strategy"] = {"type": "Recreate"}
            touched = True
            patched.add(name)
        if touched:
            path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
            changed.append(path)
    missing = sorted(set(uses_paths) - patched)
    if missing:
        raise RuntimeError(f"jina export wrote no manifest for {', '.join(missing)}")
    return changed


def _split_probe_options(containers: list[dict]) -> bool:
    """Jina 3.34 writes the liveness probe's `--timeout 9500` as ONE argument, which `jina ping` ignores (it warns
    "ignored unknown argument" and pings with its 3 s default): make it two."""
    fixed = False
    for container in containers:
        for probe in ("livenessProbe", "startupProbe", "readinessProbe"):
            command = container.get(probe, {}).get("exec", {}).get("command")
            if command and any(re.fullmatch(r"--\S+ \S+", part) for part in command):
                container[probe]["exec"]["command"] = [p for part in command for p in
                                                       (part.split(" ") if re.fullmatch(r"--\S+ \S+", part)
                                                        else [part])]
                fixed = True
    return fixed


def _is_model(uses_in_image: str) -> bool:
    local = REPO_ROOT / Path(uses_in_image).relative_to(IMAGE_ROOT)
    return _accepts_device(str(local))


def _mount(pod: dict, container: dict, volume: str, claim: str, mount_path: str, read_only: bool):
    pod.setdefault("volumes", []).append({"name": volume,
                                          "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}})
    container.setdefault("volumeMounts", []).append({"name": volume, "mountPath": mount_path,
                                                     "readOnly": read_only})


def parse_pairs(values: list[str] | None, what: str, integer: bool = False) -> dict:
    pairs = {}
    for value in values or []:
        for item in filter(None, value.split(",")):
            key, sep, val = item.partition("=")
            if not sep or not key or (integer and not re.fullmatch(r"\d+", val)):
                kind = "NAME=N with N an integer" if integer else "KEY=VALUE"
                raise ValueError(f"{what}: must be {kind}, got {item!r}")
            pairs[key.strip()] = int(val) if integer else val.strip()
    return pairs


def write_manifests(out_dir: Path, options: ServeOptions, image: str, namespace: str = "dalle-flow",
                    gpus: dict[str, int] | None = None, node_selector: dict[str, str] | None = None,
                    weights_pvc: str | None = None, workspace_pvc: str | None = None) -> list[Path]:
    spec, uses_paths, gpu_counts = k8s_flow(options, image, gpus)
    export(spec, out_dir, namespace, image)
    patch_manifests(out_dir, uses_paths, gpu_counts, node_selector, weights_pvc, workspace_pvc)
    (out_dir / NETWORK_POLICY_FILE).parent.mkdir(exist_ok=True)
    (out_dir / NETWORK_POLICY_FILE).write_text(yaml.safe_dump_all(network_policies(namespace), sort_keys=False))
    return sorted(out_dir.rglob("*.yml"))


def network_policies(namespace: str) -> list[dict]:
    """Executors accept connections from the gateway's pods only (Jina's executors speak plain, unauthenticated
    gRPC: anyone reaching one could read and write the store, bypassing TLS and the gateway's limits). Pods carry
    jina export's `pod_type` label: GATEWAY or WORKER (or HEAD)."""
    return [{
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "executors-from-gateway-only", "namespace": namespace},
        "spec": {
            "podSelector": {"matchExpressions": [{"key": "pod_type", "operator": "NotIn", "values": ["GATEWAY"]}]},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod_type": "GATEWAY"}}}]}],
        },
    }]
