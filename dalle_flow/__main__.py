"""Command line: `python -m dalle_flow serve|flow-yaml|k8s [...]`, `python -m dalle_flow weights list|download|verify`.

Toggles come from the environment (DISABLE_DALLE_MEGA, DISABLE_GLID3XL, DISABLE_SWINIR, ENABLE_CLIPSEG,
DALLE_FLOW_DEVICE_<NAME>, DALLE_FLOW_CUDA_DEVICES_<NAME>, DALLE_FLOW_REPLICAS_<NAME>, DALLE_FLOW_CLIP_SERVER) or from
the matching flags, which win; see README, "Toggles".
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def options_from(args, **server):
    from dalle_flow.deploy.flow_config import TOGGLES, ServeOptions, toggles_from_env

    toggles = toggles_from_env(os.environ)
    for attr, _, _ in TOGGLES:  # a flag switches its executor off; the environment may already have
        if attr.startswith("disable_"):
            toggles[attr] = toggles[attr] or getattr(args, attr)
        else:
            toggles[attr] = toggles[attr] and not getattr(args, attr.replace("enable_", "disable_"))
    if args.clip_server:
        toggles["clip_server"] = args.clip_server
    return ServeOptions(**toggles, **server)


def serve(args) -> int:
    from dalle_flow.deploy.flow_config import build_flow

    env = {}
    if args.preset:
        env["DALLE_FLOW_PRESET"] = args.preset
        os.environ["DALLE_FLOW_PRESET"] = args.preset
    options = options_from(args, ports=tuple(args.ports) if args.ports else None, tls_cert=args.tls_cert,
                           tls_key=args.tls_key, monitoring=args.monitoring, monitoring_port=args.monitoring_port,
                           workspace=args.workspace, env=env)
    from dalle_flow.deploy.watchdog import serve_supervised

    return serve_supervised(build_flow(options))


def flow_yaml(args) -> int:
    from dalle_flow.deploy.flow_config import flow_yaml as render

    text = render(options_from(args, ports=tuple(args.ports) if args.ports else None, workspace=args.workspace))
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def k8s(args) -> int:
    from dalle_flow.deploy.k8s import parse_pairs, write_manifests

    files = write_manifests(Path(args.dir), options_from(args), image=args.image, namespace=args.namespace,
                            gpus=parse_pairs(args.gpus, "--gpus", integer=True),
                            node_selector=parse_pairs(args.node_selector, "--node-selector"),
                            weights_pvc=args.weights_pvc, workspace_pvc=args.workspace_pvc)
    print(f"{len(files)} manifest files under {args.dir}; apply with: kubectl apply -R -f {args.dir}")
    return 0


def add_toggle_flags(p):
    p.add_argument("--disable-dalle-mega", action="store_true", help="no DALL·E Mega (or DISABLE_DALLE_MEGA=1)")
    p.add_argument("--disable-glid3xl", action="store_true", help="no GLID-3 XL (or DISABLE_GLID3XL=1)")
    p.add_argument("--disable-swinir", action="store_true", help="no SwinIR upscaler (or DISABLE_SWINIR=1)")
    p.add_argument("--disable-clipseg", action="store_true", help="no CLIPSeg on /segment (or ENABLE_CLIPSEG=0)")
    p.add_argument("--clip-server", help="CLIP-as-service to use instead of local CLIP, e.g. grpcs://host:2096 "
                                         "(or DALLE_FLOW_CLIP_SERVER; token in DALLE_FLOW_CLIP_TOKEN)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dalle_flow")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("serve", help="serve flow.yml with toggles and server options")
    p.add_argument("--ports", type=int, nargs=3, metavar=("GRPC", "HTTP", "WEBSOCKET"),
                   help="gateway ports (default 51005 51006 51007)")
    p.add_argument("--tls-cert", help="PEM certificate: turns TLS on for every protocol (needs --tls-key)")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--monitoring", action="store_true", help="expose Prometheus metrics")
    p.add_argument("--monitoring-port", type=int, help="Prometheus port of the gateway")
    p.add_argument("--workspace", help="where the store keeps its database (default ./workspace)")
    p.add_argument("--preset", choices=["real", "tiny"], help="model preset (default $DALLE_FLOW_PRESET or real)")
    add_toggle_flags(p)
    p.set_defaults(func=serve)

    p = commands.add_parser("flow-yaml", help="print the Flow YAML the toggles make (for `jina flow --uses`)")
    p.add_argument("-o", "--output", help="write it to this file instead of standard output")
    p.add_argument("--ports", type=int, nargs=3, metavar=("GRPC", "HTTP", "WEBSOCKET"))
    p.add_argument("--workspace", help="where the store keeps its database")
    add_toggle_flags(p)
    p.set_defaults(func=flow_yaml)

    p = commands.add_parser("k8s", help="Kubernetes manifests: jina export kubernetes, patched for GPUs and volumes")
    p.add_argument("dir", help="output folder (kubectl apply -R -f DIR)")
    p.add_argument("--image", default="dalle-flow:latest", help="the image built from the Dockerfile")
    p.add_argument("--namespace", default="dalle-flow", help="Kubernetes namespace (default dalle-flow)")
    p.add_argument("--gpus", action="append", metavar="NAME=N",
                   help="GPUs per pod of an executor (default 1 for each model executor, 0 = CPU); repeatable")
    p.add_argument("--node-selector", action="append", metavar="KEY=VALUE",
                   help="node label the GPU pods must run on, e.g. cloud.google.com/gke-accelerator=nvidia-l4")
    p.add_argument("--weights-pvc", help="existing PersistentVolumeClaim holding the weights (mounted read-only)")
    p.add_argument("--workspace-pvc", help="existing PersistentVolumeClaim for the store's database")
    add_toggle_flags(p)
    p.set_defaults(func=k8s)

    from dalle_flow.weights_cli import add_parser

    add_parser(commands)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:  # a bad toggle or option: one clear line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
