"""Build the served Flow from flow.yml plus server options and toggles, without hand-editing YAML.

`jina flow --uses flow.yml` serves the defaults. This module adds what a YAML file cannot make optional: TLS
(certificate + key), Prometheus monitoring, other ports, another workspace, the model preset, and the toggles of the
later original DALL·E Flow: which executors run (DISABLE_DALLE_MEGA, DISABLE_GLID3XL, DISABLE_SWINIR,
ENABLE_CLIPSEG), on which device or GPUs, how many replicas, and an external CLIP-as-service instead of local CLIP.
`toggles_from_env` reads the toggles; `python -m dalle_flow serve` and `flow-yaml` use it.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from dalle_flow.deploy import flow_graph
from dalle_flow.serving.limits import request_limits

REPO_ROOT = Path(__file__).resolve().parents[2]
FLOW_YML = REPO_ROOT / "flow.yml"

# (ServeOptions field, environment variable, executor it removes or adds): the original's flags, same names
TOGGLES = (
    ("disable_dalle_mega", "DISABLE_DALLE_MEGA", "dalle"),
    ("disable_glid3xl", "DISABLE_GLID3XL", "diffusion"),
    ("disable_swinir", "DISABLE_SWINIR", "upscaler"),
    ("enable_clipseg", "ENABLE_CLIPSEG", "clipseg"),
)
# /segment is one of the Flow's endpoints, so CLIPSeg is on unless ENABLE_CLIPSEG says otherwise (the original's
# default was off)
TOGGLE_DEFAULTS = {"enable_clipseg": True}
GENERATORS = ("dalle", "diffusion")
# with an external CLIP-as-service, the Flow's CLIP executor becomes a thin forwarder to it (see
# executors/clip/remote.py for why a Jina `external: true` executor cannot stand in for it)
REMOTE_CLIP = {"rerank": "executors/clip/remote.yml"}
# executors of earlier versions whose work another one took over: settings naming them get a pointer, not just "no
# such executor"
MERGED_EXECUTORS = {"clip_encoder": "rerank"}
CLIP_SERVER_ENV = "DALLE_FLOW_CLIP_SERVER"
CLIP_SCHEMES = ("grpc", "grpcs", "http", "https", "websocket", "ws", "wss")
# per-executor settings: DALLE_FLOW_<KIND>_<EXECUTOR NAME IN UPPER CASE>, e.g. DALLE_FLOW_REPLICAS_DALLE=2
SETTING_PREFIXES = {"devices": "DALLE_FLOW_DEVICE_", "cuda_devices": "DALLE_FLOW_CUDA_DEVICES_",
                    "replicas": "DALLE_FLOW_REPLICAS_"}
MAX_REPLICAS = 16
SINGLE_REPLICA = {"store": "it keeps one SQLite database that replicas would write concurrently"}
TRUE, FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")
LOOPBACK = "127.0.0.1"
GATEWAY_TIMEOUT_MARGIN_S = 30


@dataclass
class ServeOptions:
    ports: tuple[int, int, int] | None = None  # grpc, http, websocket
    tls_cert: str | None = None
    tls_key: str | None = None
    monitoring: bool = False
    monitoring_port: int | None = None
    workspace: str | None = None
    env: dict = field(default_factory=dict)  # extra environment for every executor (e.g. DALLE_FLOW_PRESET)
    disable_dalle_mega: bool = False
    disable_glid3xl: bool = False
    disable_swinir: bool = False
    enable_clipseg: bool = True
    devices: dict = field(default_factory=dict)  # executor -> torch device (`device` of its config): cpu, cuda:1
    cuda_devices: dict = field(default_factory=dict)  # executor -> its CUDA_VISIBLE_DEVICES: "1", "0,1", "RR"
    replicas: dict = field(default_factory=dict)  # executor -> number of replicas
    clip_server: str | None = None  # grpc[s]://host:port of a CLIP-as-service used instead of local CLIP
    # executors listen on 127.0.0.1 only: on one host nothing but the gateway may reach them (on Kubernetes they
    # must listen on the pod's address, and NetworkPolicy objects keep clients out instead; see deploy/k8s.py)
    loopback_executors: bool = True


def all_executor_names(source: Path = FLOW_YML) -> list[str]:
    with open(source) as f:
        return [e["name"] for e in yaml.safe_load(f).get("executors", [])]


def merged_hint(name: str) -> str:
    """Why an executor name of an earlier version is unknown now ("" for any other name)."""
    merged_into = MERGED_EXECUTORS.get(name.lower())
    return f" ({name.lower()} is part of {merged_into} now: the Flow holds one CLIP)" if merged_into else ""


def _flag(environ, name: str, default: bool = False) -> bool:
    if not environ.get(name, "").strip():
        return default
    value = environ[name].strip().lower()
    if value in TRUE or value in FALSE:
        return value in TRUE
    raise ValueError(f"{name}: must be one of {'/'.join(TRUE)} or {'/'.join(FALSE[1:])}, got {environ[name]!r}")


def toggles_from_env(environ, source: Path = FLOW_YML) -> dict:
    """ServeOptions keyword arguments from environment variables; a typo in a variable name or value is an error."""
    options = {attr: _flag(environ, var, TOGGLE_DEFAULTS.get(attr, False)) for attr, var, _ in TOGGLES}
    known = {name.upper(): name for name in all_executor_names(source)}
    for attr, prefix in SETTING_PREFIXES.items():
        settings = {}
        for var, value in environ.items():
            if var.startswith(prefix):
                suffix = var[len(prefix):]
                if suffix not in known:
                    raise ValueError(f"{var}: no executor named {suffix!r}{merged_hint(suffix)}; use one of "
                                     f"{', '.join(prefix + k for k in known)}")
                settings[known[suffix]] = _replicas(var, value) if attr == "replicas" else value.strip()
        options[attr] = settings
    options["clip_server"] = environ.get(CLIP_SERVER_ENV, "").strip() or None
    return options


def _replicas(what: str, value) -> int:
    text = str(value).strip()
    if not re.fullmatch(r"\d+", text) or not 1 <= int(text) <= MAX_REPLICAS:
        raise ValueError(f"{what}: must be an integer between 1 and {MAX_REPLICAS}, got {value!r}")
    return int(text)


def check_clip_server(url: str) -> str:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in CLIP_SCHEMES or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise ValueError(f"{CLIP_SERVER_ENV}: must be SCHEME://HOST:PORT with SCHEME one of {', '.join(CLIP_SCHEMES)} "
                         f"(grpcs/https/wss for TLS), e.g. grpcs://api.clip.jina.ai:2096; got {url!r}")
    return url


def topology(options: ServeOptions, executors: list[dict]) -> list[dict]:
    """flow.yml's executors with the toggles applied: switched-off ones removed and their dependants rewired."""
    executors = flow_graph.normalize_needs(executors)
    disabled = [name for attr, _, name in TOGGLES if getattr(options, attr) == attr.startswith("disable_")]
    for name in disabled:
        executors = flow_graph.remove_executor(executors, name)
    if not any(name in flow_graph.names(executors) for name in GENERATORS):
        raise ValueError("DISABLE_DALLE_MEGA and DISABLE_GLID3XL: at least one generator must stay enabled, "
                         "otherwise `/` returns no candidates")
    return executors


def _accepts_device(uses: str | None) -> bool:
    """Only executors whose config has a `device` argument can be placed on a device (not the store, nor the
    CLIP-as-service forwarders)."""
    if not isinstance(uses, str) or not uses.endswith((".yml", ".yaml")) or not Path(uses).is_file():
        return False
    with open(uses) as f:
        return "device" in (yaml.safe_load(f).get("with") or {})


def _apply_settings(options: ServeOptions, executors: list[dict], known: list[str]):
    present = {e["name"]: e for e in executors}
    for attr, prefix in SETTING_PREFIXES.items():
        for name, value in getattr(options, attr).items():
            what = f"{prefix}{name.upper()}"
            if name not in known:
                raise ValueError(f"{what}: no executor named {name!r}{merged_hint(name)}; the Flow's executors are "
                                 f"{', '.join(known)}")
            if name not in present:
                continue  # toggled off: its settings may stay in an environment file
            executor = present[name]
            if attr == "replicas":
                executor["replicas"] = _replicas(what, value)
                if executor["replicas"] > 1 and name in SINGLE_REPLICA:
                    raise ValueError(f"{what}: {name} must run as one replica: {SINGLE_REPLICA[name]}")
                continue
            if not _accepts_device(executor.get("uses")):
                raise ValueError(f"{what}: {name} runs no model here, so it has no device to choose")
            if attr == "devices":
                if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
                    raise ValueError(f"{what}: must be auto, cpu, cuda or cuda:N, got {value!r}")
                executor["uses_with"] = {**executor.get("uses_with", {}), "device": value}
            else:
                if not re.fullmatch(r"\d+(,\d+)*|RR(\d*:\d*)?", value):
                    raise ValueError(f"{what}: must be GPU indices like 1 or 0,1, or RR to spread replicas over "
                                     f"the GPUs round-robin (RR0:2 over GPUs 0 and 1), got {value!r}")
                executor["env"] = {**executor.get("env", {}), "CUDA_VISIBLE_DEVICES": value}


def flow_dict(options: ServeOptions | None = None, source: Path = FLOW_YML) -> dict:
    options = options or ServeOptions()
    with open(source) as f:
        spec = yaml.safe_load(f)
    spec = copy.deepcopy(spec)
    known = [e["name"] for e in spec.get("executors", [])]
    spec["executors"] = topology(options, spec.get("executors", []))
    gateway = spec.setdefault("with", {})
    if options.ports:
        gateway["port"] = list(options.ports)
    if bool(options.tls_cert) != bool(options.tls_key):
        raise ValueError("TLS needs both a certificate and a key (--tls-cert and --tls-key)")
    if options.tls_cert:
        for name, path in (("certificate", options.tls_cert), ("key", options.tls_key)):
            if not Path(path).is_file():
                raise ValueError(f"TLS {name} file not found: {path}")
        # on the gateway alone: Flow-level `with:` arguments also reach the executors, whose internal gRPC stays plain
        spec.setdefault("gateway", {}).update(ssl_certfile=str(Path(options.tls_cert).resolve()),
                                              ssl_keyfile=str(Path(options.tls_key).resolve()))
    _harden_gateway(spec.setdefault("gateway", {}), request_limits())
    if options.monitoring:
        gateway["monitoring"] = True
        if options.monitoring_port:
            gateway["port_monitoring"] = options.monitoring_port
    if options.env:
        gateway["env"] = {**gateway.get("env", {}), **options.env}
    for executor in spec["executors"]:
        if options.clip_server and executor["name"] in REMOTE_CLIP:
            executor["uses"] = REMOTE_CLIP[executor["name"]]
            executor["uses_with"] = {"server": check_clip_server(options.clip_server)}
        uses = executor.get("uses")
        if isinstance(uses, str) and uses.endswith((".yml", ".yaml")) and not Path(uses).is_absolute():
            executor["uses"] = str((source.parent / uses).resolve())
        if options.workspace and "workspace" in executor:
            executor["workspace"] = str(Path(options.workspace).resolve())
        if options.monitoring:
            executor["monitoring"] = True
        if options.loopback_executors and not executor.get("external"):
            executor["host"] = LOOPBACK
        if options.env:
            executor["env"] = {**executor.get("env", {}), **options.env}
    _apply_settings(options, spec["executors"], known)
    return spec


def _harden_gateway(gateway: dict, limits) -> None:
    """Settings of the gateway that flow.yml names (deploy/gateway.py: no tracebacks, versions or internal addresses
    to clients, CORS without credentials, HTTP/WebSocket size limit): the largest gRPC message it accepts, and how long
    it waits for an executor (an executor stops its own work at the request deadline; the margin lets its error reach
    the client first)."""
    gateway["grpc_server_options"] = {"grpc.max_receive_message_length": limits.max_request_mib * 1024 * 1024}
    gateway["timeout_send"] = (limits.request_timeout_s + GATEWAY_TIMEOUT_MARGIN_S) * 1000


def flow_yaml(options: ServeOptions | None = None, source: Path = FLOW_YML) -> str:
    """The Flow as YAML that `jina flow --uses` serves (paths are absolute, so it works from any directory)."""
    return yaml.safe_dump(flow_dict(options, source), sort_keys=False)


def build_flow(options: ServeOptions | None = None, source: Path = FLOW_YML):
    from jina import Flow

    return Flow.load_config(flow_yaml(options, source))
