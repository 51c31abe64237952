"""Hot reload of the Istio rules: poll the files' mtimes; a valid change swaps the router for new requests.

Theory of operation. `check()` compares a snapshot (name, mtime_ns, size of every rules file) with the last one. A
change is read only once it holds still: the snapshot must be the same at two checks in a row. A file is rewritten
by truncating it and then writing it, so a check can land on the empty (or half-written) file, and an empty rules
file is valid: it would drop every route until the next check. Then it builds a new router; exchanges already
started keep the decision they made, new ones use the new router. A build that raises ConfigError is logged and
remembered in `last_error` (shown by /config_dump); the old router keeps serving, and the same broken snapshot is
not re-read until it changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from meshtrace import ConfigError

from .istio_config import rule_files

__all__ = ["RulesReloader"]

logger = logging.getLogger("meshtrace.proxy")

R = TypeVar("R")

Snapshot = tuple[tuple[str, int, int], ...]


def snapshot(path: str | Path) -> Snapshot:
    out = []
    for file in rule_files(path):
        try:
            stat = file.stat()
        except OSError:
            out.append((str(file), -1, -1))
            continue
        out.append((str(file), stat.st_mtime_ns, stat.st_size))
    return tuple(out)


class RulesReloader(Generic[R]):
    def __init__(self, path: str | Path, build: Callable[[], R], apply: Callable[[R], None], *,
                 interval: float = 1.0) -> None:
        self.path = path
        self.build = build
        self.apply = apply
        self.interval = interval
        self.last = snapshot(path)
        self._moving: Snapshot | None = None      # a changed snapshot seen once, not yet read
        self.last_error: str | None = None
        self.reloads = 0
        self._handle: asyncio.TimerHandle | None = None

    def check(self) -> bool:
        """True when a changed, valid rule set was applied (a change is read at the second check that sees it)."""
        current = snapshot(self.path)
        if current == self.last:
            self._moving = None
            return False
        if current != self._moving:     # changed since the last check: maybe mid-write, look again next time
            self._moving = current
            return False
        self._moving = None
        self.last = current
        try:
            router = self.build()
        except ConfigError as exc:
            self.last_error = str(exc)
            logger.error("rules not reloaded, the previous ones stay in force: %s", exc)
            return False
        self.apply(router)
        self.last_error = None
        self.reloads += 1
        logger.info("rules reloaded from %s", self.path)
        return True

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        def tick() -> None:
            try:
                self.check()
            except Exception:
                logger.exception("checking the rules for changes failed")
            self._handle = loop.call_later(self.interval, tick)
        self._handle = loop.call_later(self.interval, tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
