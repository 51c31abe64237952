"""Hop reports (the Istio counters, the hop span's end, the access log) run when the listener's responses are out.

Theory of operation. When an exchange finishes, its response is already written; what is left is telemetry,
about a quarter of a traced request's instructions. Run inline, it delays every response still to come: at a steady
1000 req/s requests arrive in bunches (a load generator's timer tick, a client fanning out), and the loop's time
in the slowest 1% of requests was the other requests' callbacks, so the third response of a bunch waited for the
first two's spans to be encoded. So `Exchange.finish` hands the exchange to its listener's `ReportQueue`, which
runs the reports once no other exchange of the listener is in flight (`in_flight`, kept by `Exchange.start` and
`finish`): the last response of a bunch schedules `run` with `call_soon`, and the loop runs it once the callbacks
of the events it is handling are done, before it polls for more (uvloop's ready callbacks run before its next
poll; asyncio's after the batch's own I/O callbacks). Two bounds keep reports from waiting on traffic that never
pauses (saturation, a long download or WebSocket in flight): `MAX_QUEUED` reports, or `MAX_DELAY` seconds after
the first of them.

So a report lands before anything that arrives after the listener went quiet is read (a /metrics scrape, the
client's next request), at most `MAX_DELAY` late under load, and the times it reports were taken when the
exchange finished, not when the report runs. After each batch of reports `idle` runs too: the listener's work
for the next requests (request ids drawn, root spans made ahead of time), done while the loop would wait anyway.

`close()` runs what is queued and makes later reports run inline: once the listener stops, the loop may not turn
again before the process flushes its spans and exits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

__all__ = ["MAX_DELAY", "MAX_QUEUED", "ReportQueue", "Reportable"]

#: Reports run at the latest this long after the first of them was queued (seconds), ...
MAX_DELAY = 0.005
#: ... or once this many are queued.
MAX_QUEUED = 64

logger = logging.getLogger("meshtrace.proxy")


class Reportable(Protocol):
    """A finished exchange (proxy.exchange.Exchange), as far as its report goes."""

    def report(self) -> None: ...


def _report(exchange: Reportable) -> None:
    try:
        exchange.report()
    except Exception:
        # Telemetry never fails a request, nor the reports queued after this one.
        logger.exception("recording a hop failed")


class ReportQueue:
    """One listener's finished exchanges waiting for their reports."""

    __slots__ = ("_call_later", "_call_soon", "_closed", "_deadline", "_queued", "_run", "_soon", "idle", "in_flight")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Bound once (as `_run` below): each lookup on the loop would make a new bound method.
        self._call_soon: Callable[[Callable[[], None]], object] = loop.call_soon
        self._call_later: Callable[[float, Callable[[], None]], asyncio.TimerHandle] = loop.call_later
        self._queued: list[Reportable] = []
        self._closed = False
        self._soon = False                              # `run` is scheduled for the loop's next turn
        self._deadline: asyncio.TimerHandle | None = None   # `run` at MAX_DELAY, while exchanges are in flight
        self._run = self.run
        #: The listener's exchanges started and not yet finished.
        self.in_flight = 0
        #: Work for when the loop has nothing else to do, run after each batch of reports (ids and spans for the
        #: next requests: proxy.listener).
        self.idle: Callable[[], None] | None = None

    def add(self, exchange: Reportable) -> None:
        """Queue a finished exchange's report (`in_flight` no longer counting it)."""
        if self._closed:
            _report(exchange)
            return
        queued = self._queued
        queued.append(exchange)
        if self.in_flight <= 0 or len(queued) >= MAX_QUEUED:
            if not self._soon:
                self._soon = True
                self._call_soon(self._run)
        elif self._deadline is None:
            self._deadline = self._call_later(MAX_DELAY, self._run)

    def run(self) -> None:
        """Report every queued exchange, in the order they finished."""
        self._soon = False
        deadline = self._deadline
        if deadline is not None:
            self._deadline = None
            deadline.cancel()
        queued = self._queued
        if queued:
            self._queued = []
            for exchange in queued:
                _report(exchange)
            idle = self.idle
            if idle is not None and not self._closed:    # nothing to prepare for once the listener stops
                try:
                    idle()
                except Exception:
                    logger.exception("preparing for the next requests failed")

    def close(self) -> None:
        """Report what is queued; from now on, report each exchange as it finishes."""
        self._closed = True
        self.run()
