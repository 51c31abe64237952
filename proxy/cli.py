"""`meshtrace proxy …`: the sidecar subcommand, plugged into the `meshtrace` CLI by entry point."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]

_DURATION = "duration (e.g. 500ms, 10s)"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `proxy` parser; its `func` runs the sidecar and returns the exit code."""
    parser = subparsers.add_parser(
        "proxy", help="run a tracing sidecar proxy beside one service",
        description="A sidecar beside one service: an inbound listener in front of the app and an outbound "
        "listener the app sends its calls through (HTTP_PROXY style or by Host header). Every hop gets a span, "
        "Istio metrics and an access log line. Flags override MESHTRACE_PROXY_* variables, which override "
        "the --config file. Tracing settings come from OTEL_*/MESHTRACE_* variables.",
        epilog="Example: meshtrace proxy --listen 127.0.0.1:15006 --upstream 127.0.0.1:8080 "
        "--admin 127.0.0.1:15000 --service reviews --outbound 127.0.0.1:15001")
    add = parser.add_argument
    add("--config", metavar="FILE", help="YAML file of sidecar settings")
    add("--service", help="this service's name (span and metric labels)")
    add("--listen", metavar="HOST:PORT", help="inbound listener address")
    add("--upstream", metavar="HOST:PORT", help="the local app the inbound listener forwards to")
    add("--outbound", metavar="HOST:PORT", help="outbound listener address (the app's HTTP proxy)")
    add("--admin", metavar="HOST:PORT", help="admin address: /metrics /ready /healthz /config_dump /stats")
    add("--sampling", metavar="PERCENT", help="percent of new traces sampled here (default 100)")
    add("--drain-timeout", metavar="DURATION", help=f"SIGTERM drain limit, a {_DURATION} (default 10s)")
    add("--upstream-timeout", metavar="DURATION", help="time to the response head, 0 = none (default 15s)")
    add("--connect-timeout", metavar="DURATION", help="upstream connect limit (default 5s)")
    add("--idle-timeout", metavar="DURATION", help="keep-alive idle limit (default 60s)")
    add("--header-timeout", metavar="DURATION", help="limit to receive a request head, else 408 (default 10s)")
    add("--stream-idle-timeout", metavar="DURATION",
        help="reset a request when no byte moves either way for this long, 0 = never (default 5m)")
    add("--access-log", metavar="PATH", help="access log file; '-' stdout (default), '' off")
    add("--access-log-format", choices=["envoy", "json"], help="access log format (default envoy)")
    add("--no-tracing", dest="tracing", action="store_const", const=False, help="make no spans")
    add("--allow-public-bind", action="store_const", const=True, help="allow non-loopback listen addresses")
    add("--namespace", help="workload namespace (metric labels, peer metadata)")
    add("--app", help="workload app label")
    add("--workload-version", dest="version", help="workload version label")
    add("--workload", help="workload name")
    add("--tcp", action="append", metavar="LISTEN=UPSTREAM",
        help="pass a non-HTTP port through as plain TCP, e.g. 127.0.0.1:15010=127.0.0.1:5432 (repeatable)")
    add("--rules", metavar="PATH",
        help="Istio VirtualService/DestinationRule/ServiceEntry YAML (a file or a folder) for outbound traffic")
    parser.set_defaults(func=_main)


_FLAG_KEYS = ("service", "listen", "upstream", "outbound", "admin", "sampling", "drain_timeout", "upstream_timeout",
              "connect_timeout", "idle_timeout", "header_timeout", "stream_idle_timeout", "access_log",
              "access_log_format", "tracing", "allow_public_bind", "namespace", "app", "version", "workload", "tcp",
              "rules")


def _main(args: argparse.Namespace) -> int:
    from .config import load_config
    from .server import run

    flags: dict[str, Any] = {key: getattr(args, key, None) for key in _FLAG_KEYS}
    config = load_config(flags, path=args.config)
    return run(config)
