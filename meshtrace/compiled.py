"""Which modules the build compiles with mypyc, and whether this process runs them compiled.

setup.py reads `MODULES` (without importing the package: the build has no dependencies installed). The sidecar's
request path runs about a third fewer instructions compiled; the same source runs interpreted when the install
was made with `MESHTRACE_PURE_PYTHON=1`. `stale()` finds compiled modules older than their source: an editable
install compiles at install time, so an edit is not in effect until the next `make check` / `pip install -e`.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
from pathlib import Path

__all__ = ["MODULES", "interpreted", "stale"]

# The sidecar's per-request path. Each must work compiled and interpreted alike (tests/proxy/test_compiled.py).
MODULES = (
    "meshtrace.encodedlane",
    "meshtrace.exporters.encoded",
    "meshtrace.proxy.accesslog",
    "meshtrace.proxy.balancer",
    "meshtrace.proxy.breaker",
    "meshtrace.proxy.codec",
    "meshtrace.proxy.connection",
    "meshtrace.proxy.errors",
    "meshtrace.proxy.exchange",
    "meshtrace.proxy.fault",
    "meshtrace.proxy.flags",
    "meshtrace.proxy.headers",
    "meshtrace.proxy.hop",
    "meshtrace.proxy.hop_wire",
    "meshtrace.proxy.listener",
    "meshtrace.proxy.localreply",
    "meshtrace.proxy.match_index",
    "meshtrace.proxy.metrics",
    "meshtrace.proxy.mirror",
    "meshtrace.proxy.outlier",
    "meshtrace.proxy.peer",
    "meshtrace.proxy.policy",
    "meshtrace.proxy.pool",
    "meshtrace.proxy.reports",
    "meshtrace.proxy.request_id",
    "meshtrace.proxy.retry",
    "meshtrace.proxy.router",
    "meshtrace.proxy.routes",
    "meshtrace.proxy.split",
    "meshtrace.proxy.tracing",
    "meshtrace.proxy.upstream",
    "meshtrace.proxy.vs_match",
)


def _is_extension(path: str | None) -> bool:
    return path is not None and path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def interpreted() -> list[str]:
    """The modules of MODULES this install would import from source, not compiled."""
    found = []
    for name in MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or not _is_extension(spec.origin):
            found.append(name)
    return found


def stale() -> list[str]:
    """Compiled modules whose source file was changed after they were compiled."""
    found = []
    for name in MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None or not _is_extension(spec.origin):
            continue
        compiled = Path(spec.origin)
        source = compiled.with_name(name.rpartition(".")[2] + ".py")
        if source.exists() and source.stat().st_mtime > compiled.stat().st_mtime:
            found.append(name)
    return found
