"""`meshtrace-run [options] command [args...]`: run a program with tracing, changing none of its code.

Like `opentelemetry-instrument`: puts a folder holding meshtrace's `sitecustomize` first on PYTHONPATH, so
every Python process the command starts (gunicorn and its workers, `python -m …`, subprocesses) configures
meshtrace from the environment and instruments every supported library at start-up, then replaces itself
with the command. Options are shorthands for the environment variables they set.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from typing import NoReturn

from meshtrace import __version__

__all__ = ["bootstrap_dir", "build_environment", "main"]

_OPTIONS = {
    "service_name": "OTEL_SERVICE_NAME",
    "exporter": "MESHTRACE_EXPORTER",
    "endpoint": "OTEL_EXPORTER_OTLP_ENDPOINT",
    "propagators": "MESHTRACE_PROPAGATORS",
    "excluded_urls": "MESHTRACE_EXCLUDED_URLS",
    "disabled": "MESHTRACE_DISABLED_INSTRUMENTATIONS",
}


def bootstrap_dir() -> str:
    """The folder holding meshtrace's sitecustomize (inside the installed package)."""
    from meshtrace.integrations import bootstrap

    return os.path.dirname(os.path.abspath(bootstrap.__file__))


def build_environment(environ: dict[str, str], **options: str | None) -> dict[str, str]:
    """The child's environment: our folder first on PYTHONPATH, options as their variables."""
    env = dict(environ)
    here = bootstrap_dir()
    existing = [item for item in env.get("PYTHONPATH", "").split(os.pathsep) if item and item != here]
    env["PYTHONPATH"] = os.pathsep.join([here, *existing])
    for key, variable in _OPTIONS.items():
        value = options.get(key)
        if value is not None:
            env[variable] = value
    return env


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshtrace-run",
        description="Run a Python program with meshtrace tracing and auto-instrumentation, no code changes.",
    )
    parser.add_argument("--version", action="version", version=f"meshtrace {__version__}")
    parser.add_argument("--service-name", help="sets OTEL_SERVICE_NAME")
    parser.add_argument("--exporter", help="otlp, zipkin, console, file or none (sets MESHTRACE_EXPORTER)")
    parser.add_argument("--endpoint", help="sets OTEL_EXPORTER_OTLP_ENDPOINT")
    parser.add_argument("--propagators", help="header formats to inject (sets MESHTRACE_PROPAGATORS)")
    parser.add_argument("--excluded-urls", help="comma-separated regexes of paths not to trace")
    parser.add_argument("--disabled", help="comma-separated instrumentations to skip (flask,django,...)")
    parser.add_argument("command", help="the program to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    return parser


def main(argv: Sequence[str] | None = None) -> NoReturn:
    options = _parser().parse_args(argv)
    env = build_environment(
        dict(os.environ),
        service_name=options.service_name,
        exporter=options.exporter,
        endpoint=options.endpoint,
        propagators=options.propagators,
        excluded_urls=options.excluded_urls,
        disabled=options.disabled,
    )
    executable = shutil.which(options.command, path=env.get("PATH")) or options.command
    try:
        os.execve(executable, [options.command, *options.args], env)
    except OSError as exc:
        print(f"meshtrace-run: cannot run {options.command!r}: {exc.strerror or exc}", file=sys.stderr)
        raise SystemExit(127) from exc


if __name__ == "__main__":
    main()
