"""Build the served Flow from flow.yml plus server options, without hand-editing YAML.

`jina flow --uses flow.yml` serves the defaults. This module adds what a YAML file cannot make optional: TLS
(certificate + key), Prometheus monitoring, other ports, another workspace, and the model preset.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
FLOW_YML = REPO_ROOT / "flow.yml"


@dataclass
class ServeOptions:
    ports: tuple[int, int, int] | None = None  # grpc, http, websocket
    tls_cert: str | None = None
    tls_key: str | None = None
    monitoring: bool = False
    monitoring_port: int | None = None
    workspace: str | None = None
    env: dict = field(default_factory=dict)  # extra environment for every executor (e.g. DALLE_FLOW_PRESET)


def flow_dict(options: ServeOptions | None = None, source: Path = FLOW_YML) -> dict:
    options = options or ServeOptions()
    with open(source) as f:
        spec = yaml.safe_load(f)
    spec = copy.deepcopy(spec)
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
    if options.monitoring:
        gateway["monitoring"] = True
        if options.monitoring_port:
            gateway["port_monitoring"] = options.monitoring_port
    if options.env:
        gateway["env"] = {**gateway.get("env", {}), **options.env}
    for executor in spec.get("executors", []):
        uses = executor.get("uses")
        if isinstance(uses, str) and uses.endswith((".yml", ".yaml")) and not Path(uses).is_absolute():
            executor["uses"] = str((source.parent / uses).resolve())
        if options.workspace and "workspace" in executor:
            executor["workspace"] = str(Path(options.workspace).resolve())
        if options.monitoring:
            executor["monitoring"] = True
        if options.env:
            executor["env"] = {**executor.get("env", {}), **options.env}
    return spec


def build_flow(options: ServeOptions | None = None, source: Path = FLOW_YML):
    from jina import Flow

    return Flow.load_config(yaml.safe_dump(flow_dict(options, source), sort_keys=False))
