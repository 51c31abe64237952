"""`import meshtrace.auto`: configure meshtrace from the environment and instrument every supported library.

Instrumentors are discovered through the entry-point group `meshtrace.instrumentors` (name ->
`module:object` with `instrument()`), never imported by name, so the core package stays below the
integrations (a layering test enforces it) and third-party packages can add their own. Each instrumentor
patches its library lazily (post-import hooks), so the import order of the program does not matter.

Environment: `MESHTRACE_DISABLED_INSTRUMENTATIONS` (or OpenTelemetry's `OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`),
comma-separated names to skip; `MESHTRACE_AUTO_CONFIGURE=false` instruments without calling `configure()`
(for programs that configure tracing themselves). Nothing here ever raises into the host program: a
failure is logged and that instrumentor is skipped.
"""

from __future__ import annotations

import logging
import os
from importlib.metadata import entry_points
from typing import Any

import meshtrace

__all__ = ["GROUP", "disabled_names", "instrument_all", "instrumented", "run", "uninstrument_all"]

GROUP = "meshtrace.instrumentors"
logger = logging.getLogger("meshtrace.auto")

_loaded: dict[str, Any] = {}


def disabled_names() -> set[str]:
    for name in ("MESHTRACE_DISABLED_INSTRUMENTATIONS", "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"):
        raw = os.environ.get(name)
        if raw and raw.strip():
            return {item.strip().lower() for item in raw.split(",") if item.strip()}
    return set()


def instrument_all() -> list[str]:
    """Instrument every library registered under `meshtrace.instrumentors`; return the names instrumented."""
    disabled = disabled_names()
    done: list[str] = []
    for entry in sorted(entry_points(group=GROUP), key=lambda item: item.name):
        if entry.name.lower() in disabled:
            continue
        try:
            instrumentor = _loaded.get(entry.name) or entry.load()
            instrumentor.instrument()
        except Exception:
            logger.warning("meshtrace: could not instrument %s; it stays untraced", entry.name, exc_info=True)
            continue
        _loaded[entry.name] = instrumentor
        done.append(entry.name)
    return done


def uninstrument_all() -> None:
    for name, instrumentor in list(_loaded.items()):
        try:
            instrumentor.uninstrument()
        except Exception:
            logger.warning("meshtrace: could not uninstrument %s", name, exc_info=True)


def instrumented() -> list[str]:
    return sorted(_loaded)


def _truthy(raw: str | None, default: bool) -> bool:
    if raw is None or not raw.strip():
        return default
    return raw.strip().lower() not in ("0", "false", "no", "off")


def run() -> list[str]:
    """Configure from the environment (unless told not to) and instrument everything; never raises."""
    if _truthy(os.environ.get("MESHTRACE_AUTO_CONFIGURE"), True):
        try:
            meshtrace.configure()
        except Exception:
            logger.warning("meshtrace: configure() failed; libraries are instrumented but spans may go "
                           "nowhere", exc_info=True)
    return instrument_all()


run()
