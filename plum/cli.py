"""The `plum` command."""

from __future__ import annotations

import argparse
import sys

import plum
from plum.config import Role, default_config_file, load_config
from plum.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plum",
        description="Plum: distributed task orchestration and scheduling.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="run a controller, an agent, or both (all-in-one)")
    serve.add_argument(
        "--role",
        choices=[r.value for r in Role],
        help="what this process runs (default: plum.toml, else all)",
    )
    serve.add_argument("--config", help="path to plum.toml (default: ./plum.toml if present)")
    serve.add_argument("--addr", help="HOST:PORT for the REST API and dashboard (127.0.0.1:8080)")
    serve.add_argument("--grpc-addr", dest="grpc_addr", help="HOST:PORT for gRPC workers")
    serve.add_argument("--data-dir", dest="data_dir", help="where state is kept (./.plum)")
    serve.add_argument("--controller", help="agent: the controller's base URL")
    serve.add_argument("--node-id", dest="node_id", help="agent: this node's id (hostname)")
    serve.add_argument("--agent-ip", dest="agent_ip", help="agent: the address it reports")
    sub.add_parser("version", help="print the version")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"plum {plum.__version__}")
        return
    if args.command != "serve":
        parser.print_help()
        sys.exit(2)
    try:
        config = load_config(default_config_file(args.config), flags=vars(args))
    except ConfigError as exc:
        print(f"plum: configuration error: {exc.message}", file=sys.stderr)
        sys.exit(2)
    from plum.server import run

    sys.exit(run(config))
