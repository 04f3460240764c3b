"""Command line: `python -m dalle_flow serve [...]`, `python -m dalle_flow weights list|download|verify [...]`."""
from __future__ import annotations

import argparse
import os
import sys


def serve(args) -> int:
    from dalle_flow.flow_config import ServeOptions, build_flow

    env = {}
    if args.preset:
        env["DALLE_FLOW_PRESET"] = args.preset
        os.environ["DALLE_FLOW_PRESET"] = args.preset
    options = ServeOptions(ports=tuple(args.ports) if args.ports else None, tls_cert=args.tls_cert,
                           tls_key=args.tls_key, monitoring=args.monitoring, monitoring_port=args.monitoring_port,
                           workspace=args.workspace, env=env)
    flow = build_flow(options)
    with flow:
        flow.block()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dalle_flow")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("serve", help="serve flow.yml with server options")
    p.add_argument("--ports", type=int, nargs=3, metavar=("GRPC", "HTTP", "WEBSOCKET"),
                   help="gateway ports (default 51005 51006 51007)")
    p.add_argument("--tls-cert", help="PEM certificate: turns TLS on for every protocol (needs --tls-key)")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--monitoring", action="store_true", help="expose Prometheus metrics")
    p.add_argument("--monitoring-port", type=int, help="Prometheus port of the gateway")
    p.add_argument("--workspace", help="where the store keeps its database (default ./workspace)")
    p.add_argument("--preset", choices=["real", "tiny"], help="model preset (default $DALLE_FLOW_PRESET or real)")
    p.set_defaults(func=serve)
    from dalle_flow.weights_cli import add_parser

    add_parser(commands)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
