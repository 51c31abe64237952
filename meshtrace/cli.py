"""The `meshtrace` command line: a thin dispatcher whose subcommands are plugged in by entry points.

Subcommands live with the code they drive (the sidecar registers `proxy` from `meshtrace.proxy`), and are
found through the `meshtrace.commands` entry-point group, so this module never imports the proxy or the
integrations and the layering rule of ARCHITECTURE.md holds.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from meshtrace._version import __version__
from meshtrace.errors import MeshtraceError

__all__ = ["build_parser", "main"]

# A command plug-in gets the subparsers object, adds its parser, and sets `func` via set_defaults;
# `func(args)` returns the process exit code.
Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshtrace",
        description="Service-mesh tracing without the mesh: trace every hop in Jaeger, "
        "with Istio-style metrics and traffic rules.",
        epilog="Run `meshtrace COMMAND --help` for a command's options. "
        "Tracing settings come from OTEL_* and MESHTRACE_* environment variables (see docs/).",
    )
    parser.add_argument("--version", action="version", version=f"meshtrace {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for entry in sorted(entry_points(group="meshtrace.commands"), key=lambda e: e.name):
        register: Register = entry.load()
        register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return func(args)
    except MeshtraceError as exc:
        print(f"meshtrace: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
