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

In turns. A client answered at the end of a bunch often sends its next request at once (a load generator whose
timers fire as it reads a response, a caller's next call), and it arrives while that bunch's telemetry runs: a
traced report takes about 14 µs at 1000 req/s on these machines (tests/bench/probe_latency_parts.py, p50) and a span
made ahead about as many instructions (16k against 18k), so a bunch of four could hold such a request back by
100 µs. A turn of `run` stops after `SLICE_NS` (after one report at least) and schedules the
next with `call_soon`; the loop polls in between (uvloop polls before running callbacks scheduled by callbacks,
asyncio before the ones of its next turn), so a request that came meanwhile waits for one slice at most. The idle
work goes by the same turns. Behind traffic that never pauses (`MAX_QUEUED` reached, or `MAX_DELAY` passed) a run
reports everything queued at once: slices would cost a poll each while the queue only grew.

`close()` runs what is queued and makes later reports run inline: once the listener stops, the loop may not turn
again before the process flushes its spans and exits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from time import perf_counter_ns  # bound: compiled, `time.x()` is a module getattr, then the call
from typing import Protocol

__all__ = ["MAX_DELAY", "MAX_QUEUED", "SLICE_NS", "ReportQueue", "Reportable"]

#: Reports run at the latest this long after the first of them was queued (seconds), ...
MAX_DELAY = 0.005
#: ... or once this many are queued.
MAX_QUEUED = 64
#: A turn of reports and idle work stops after this long (perf_counter ns), letting the loop poll for requests.
SLICE_NS = 20_000

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

    __slots__ = ("_call_later", "_call_soon", "_closed", "_deadline", "_idle_due", "_overdue", "_queued", "_run",
                 "_soon", "idle", "in_flight")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Bound once (as `_run` below): each lookup on the loop would make a new bound method.
        self._call_soon: Callable[[Callable[[], None]], object] = loop.call_soon
        self._call_later: Callable[[float, Callable[[], None]], asyncio.TimerHandle] = loop.call_later
        self._queued: list[Reportable] = []
        self._closed = False
        self._soon = False                              # `run` is scheduled for the loop's next turn
        self._deadline: asyncio.TimerHandle | None = None   # `flush` at MAX_DELAY, while exchanges are in flight
        self._idle_due = False                          # reports ran since `idle` last said it was done
        self._run = self.run
        self._overdue = self.flush
        #: The listener's exchanges started and not yet finished.
        self.in_flight = 0
        #: Work for when the loop has nothing else to do, run after reports (ids and spans for the next requests:
        #: proxy.listener). Called with the turn's end (`perf_counter_ns()`); returns whether it has more to do.
        self.idle: Callable[[int], bool] | None = None

    def add(self, exchange: Reportable) -> None:
        """Queue a finished exchange's report (`in_flight` no longer counting it)."""
        if self._closed:
            _report(exchange)
            return
        queued = self._queued
        queued.append(exchange)
        if self.in_flight <= 0 or len(queued) >= MAX_QUEUED:
            self._next_turn()
        elif self._deadline is None:
            self._deadline = self._call_later(MAX_DELAY, self._overdue)

    def run(self) -> None:
        """A turn: the queued reports in the order they finished, for `SLICE_NS` (all of them once `MAX_QUEUED`
        are queued), then the idle work for what is left of it; the next turn is scheduled if either remains."""
        self._turn(len(self._queued) >= MAX_QUEUED)

    def flush(self) -> None:
        """Report everything queued now (then a turn's worth of idle work)."""
        self._turn(True)

    def _turn(self, everything: bool) -> None:
        self._soon = False
        deadline = self._deadline
        if deadline is not None:
            self._deadline = None
            deadline.cancel()
        until = perf_counter_ns() + SLICE_NS
        queued = self._queued
        if queued:
            self._idle_due = True
            sliced = not (everything or self._closed)
            done = 0
            count = len(queued)
            for exchange in queued:
                _report(exchange)
                done += 1
                if sliced and done < count and perf_counter_ns() >= until:    # the clock only when more are left
                    break
            del queued[:done]       # `queued` is still the queue (`add` appends to it, never replaces it)
            if queued:
                self._next_turn()
                return
        idle = self.idle
        if self._idle_due and idle is not None and not self._closed:   # nothing to prepare once the listener stops
            try:
                more = idle(until)
            except Exception:
                logger.exception("preparing for the next requests failed")
                more = False
            if more:
                self._next_turn()
                return
        self._idle_due = False

    def _next_turn(self) -> None:
        if not self._soon:
            self._soon = True
            self._call_soon(self._run)

    def close(self) -> None:
        """Report what is queued; from now on, report each exchange as it finishes."""
        self._closed = True
        self.flush()
