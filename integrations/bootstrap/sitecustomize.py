"""Loaded by Python at start-up in every process `meshtrace-run` starts: configure tracing, instrument,
then run the `sitecustomize` this one hides (a virtualenv's or the distribution's), if there is one."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import os
import sys


def _setup() -> None:
    if os.environ.get("MESHTRACE_RUN_DISABLED", "").strip().lower() in ("1", "true", "yes"):
        return
    try:
        import meshtrace.auto  # noqa: F401  (configures and instruments on import)
    except Exception:
        logging.getLogger("meshtrace.auto").warning("meshtrace: auto-instrumentation failed", exc_info=True)


def _chain() -> None:
    """Run the next `sitecustomize` on sys.path, the one Python would have loaded without us."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None or spec.origin == __file__:
        return
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception:
        logging.getLogger("meshtrace.auto").warning("meshtrace: the chained sitecustomize %s failed", spec.origin,
                                                    exc_info=True)


_setup()
_chain()
