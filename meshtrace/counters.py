"""Process-wide export counters behind `meshtrace.stats()`: what was exported, dropped and failed.

(Not called `stats.py`: the package attribute `meshtrace.stats` is the function.)
"""

from __future__ import annotations

import os
import threading

__all__ = ["COUNTERS", "increment", "reset", "snapshot"]

#: Every counter `meshtrace.stats()` reports, always present (zero until something happens).
COUNTERS: tuple[str, ...] = (
    "spans_exported",        # spans the backend (or file, console) accepted
    "spans_dropped",         # spans refused because the export queue was full
    "export_failures",       # export calls (batches) that failed, after the exporter's own retries
    "spans_failed_export",   # spans inside those failed batches
)



class _Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: dict[str, int] = dict.fromkeys(COUNTERS, 0)


_state = _Counters()


def increment(name: str, amount: int = 1) -> None:
    """Add `amount` to counter `name` (thread-safe)."""
    with _state.lock:
        _state.values[name] = _state.values.get(name, 0) + amount


def snapshot() -> dict[str, int]:
    """A copy of every counter."""
    with _state.lock:
        return dict(_state.values)


def reset() -> None:
    """Zero every counter (tests, and the child side of fork())."""
    with _state.lock:
        for name in list(_state.values):
            _state.values[name] = 0


def _after_fork_in_child() -> None:
    # The counters describe this process; a lock held by another parent thread at fork() time would stay
    # locked forever in the child, so replace it before zeroing.
    _state.lock = threading.Lock()
    reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
