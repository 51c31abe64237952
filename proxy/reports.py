"""Hop reports (the Istio counters, the hop span's end, the access log) run after the loop's current batch of I/O.

Theory of operation. When an exchange finishes, its response is already written; what is left is telemetry, a
third of a traced request's instructions. Run inline, it delays every response the loop picked up in the same
batch of events: at a steady 1000 req/s, requests arrive in bunches (a load generator's timer tick, a client
fanning out), and the third response of a bunch would wait for the first two's spans to be encoded. So
`Exchange.finish` hands the exchange to its listener's `ReportQueue`, whose first report of a batch schedules `run`
with `call_soon`: the loop runs it once the callbacks of the events it is handling are done, before it polls for
more (uvloop's ready callbacks run before its next poll; asyncio's after the batch's own I/O callbacks). So a
report still lands before anything that arrives after its response is read (a /metrics scrape, the client's next
request), and the times it reports were taken when the exchange finished, not when the report runs.

`close()` runs what is queued and makes later reports run inline: once the listener stops, the loop may not turn
again before the process flushes its spans and exits.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

__all__ = ["ReportQueue", "Reportable"]

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

    __slots__ = ("_closed", "_loop", "_queued", "_run")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queued: list[Reportable] = []
        self._closed = False
        self._run = self.run        # bound once: one fewer allocation per batch

    def add(self, exchange: Reportable) -> None:
        if self._closed:
            _report(exchange)
            return
        queued = self._queued
        queued.append(exchange)
        if len(queued) == 1:
            self._loop.call_soon(self._run)

    def run(self) -> None:
        """Report every queued exchange, in the order they finished."""
        queued = self._queued
        if queued:
            self._queued = []
            for exchange in queued:
                _report(exchange)

    def close(self) -> None:
        """Report what is queued; from now on, report each exchange as it finishes."""
        self._closed = True
        self.run()
