"""Timing hooks that `probe_latency_parts.py` loads into a sidecar process (through a generated sitecustomize).

They wrap the two protocol callbacks a proxied request runs in (the downstream read that parses the request and
writes it upstream; the upstream read that writes the response back) and the transports' writes inside them, and
pair the two callbacks of each request when only one request is in flight (true for most requests at 1000 req/s).
They also time each hop's report (`Exchange.report`, run after the responses by proxy.reports) and pair every
request's two callbacks by its downstream connection, in flight alone or not, to tell what fills the wait for the
upstream's answer: for each request, the time the loop spent in other requests' callbacks and reports during that
wait. At exit they write percentiles (µs) as JSON to $MESHTRACE_LATENCY_HOOKS_OUT. Not for production: each hook
costs about a microsecond.
"""

from __future__ import annotations

import atexit
import bisect
import json
import os
import time
from collections.abc import Callable
from typing import Any

from meshtrace.proxy import connection, exchange, upstream

_now = time.perf_counter
SKIP = 200                                    # the first requests warm caches and pools: left out


class _TimedTransport:
    """Delegates to a uvloop transport, timing write and writelines (the syscalls that wake the peer)."""

    def __init__(self, transport: Any, samples: list[float]) -> None:
        self._transport = transport
        self._samples = samples

    def write(self, data: bytes) -> None:
        start = _now()
        self._transport.write(data)
        self._samples.append(_now() - start)

    def writelines(self, parts: list[bytes]) -> None:
        start = _now()
        self._transport.writelines(parts)
        self._samples.append(_now() - start)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _percentiles(values: list[float], skip: int = SKIP) -> dict[str, float]:
    ordered = sorted(v * 1e6 for v in values[skip:])
    if not ordered:
        return {"n": 0}
    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 1)
    return {"n": len(ordered), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": round(ordered[-1], 1)}


def _busy(callbacks: list[tuple[float, float]], starts: list[float], low: float, high: float) -> float:
    """Seconds of `callbacks` (sorted (start, end) pairs; `starts` their starts) that fall inside (low, high)."""
    total = 0.0
    i = bisect.bisect_left(starts, low)
    while i < len(callbacks) and callbacks[i][0] < high:
        total += min(callbacks[i][1], high) - callbacks[i][0]
        i += 1
    return total


def waits(requests: list[tuple[float, float, float, float]], reports: list[tuple[float, float]],
          ) -> dict[str, list[float]]:
    """Every request's wait for the upstream's answer, and the loop's time in other callbacks during it.

    `requests`: (request callback start, its end, response callback start, its end) per request; `reports`: (start,
    end) of each report."""
    callbacks = sorted([(r[0], r[1]) for r in requests] + [(r[2], r[3]) for r in requests] + reports)
    starts = [c[0] for c in callbacks]
    result: dict[str, list[float]] = {"wait for upstream, all": [], "others' callbacks in it": [],
                                      "slowest 1%: wait": [], "slowest 1%: others' callbacks": []}
    # (time in the sidecar, wait, others' callbacks in the wait) per request
    timed = [(r[3] - r[0], r[2] - r[1], _busy(callbacks, starts, r[1], r[2])) for r in requests]
    for _, wait, busy in timed:
        result["wait for upstream, all"].append(wait)
        result["others' callbacks in it"].append(busy)
    for _, wait, busy in sorted(timed)[-max(1, len(timed) // 100):]:
        result["slowest 1%: wait"].append(wait)
        result["slowest 1%: others' callbacks"].append(busy)
    return result


def install() -> None:
    samples: dict[str, list[float]] = {name: [] for name in (
        "request callback", "write upstream", "upstream round trip", "response callback", "write downstream",
        "in sidecar", "report")}
    state = {"open": 0, "begin": 0.0, "sent": 0.0}
    sent_at: dict[int, tuple[float, float]] = {}            # downstream connection -> its request's callback
    requests: list[tuple[float, float, float, float]] = []
    reports: list[tuple[float, float]] = []

    down_received: Callable[..., None] = connection.DownstreamConnection.data_received
    up_received: Callable[..., None] = upstream.UpstreamConnection.data_received

    def on_request_read(self: Any, data: bytes) -> None:
        begin = _now()
        down_received(self, data)
        sent = _now()
        samples["request callback"].append(sent - begin)
        state["open"] += 1
        state["begin"], state["sent"] = begin, sent
        sent_at[id(self)] = (begin, sent)

    def on_response_read(self: Any, data: bytes) -> None:
        user = self.user
        begin = _now()
        up_received(self, data)
        end = _now()
        request = sent_at.pop(id(user.conn), None) if user is not None else None
        if request is not None:
            requests.append((*request, begin, end))
        if state["open"] == 1:                # one request in flight: this read answers it
            samples["upstream round trip"].append(begin - state["sent"])
            samples["response callback"].append(end - begin)
            samples["in sidecar"].append(end - state["begin"])
        state["open"] = max(0, state["open"] - 1)

    def wrap_made(cls: Any, key: str) -> None:
        made = cls.connection_made

        def connection_made(self: Any, transport: Any) -> None:
            made(self, _TimedTransport(transport, samples[key]))
        cls.connection_made = connection_made

    report: Callable[..., None] = exchange.Exchange.report

    def timed_report(self: Any) -> None:
        begin = _now()
        report(self)
        end = _now()
        samples["report"].append(end - begin)
        reports.append((begin, end))

    connection.DownstreamConnection.data_received = on_request_read  # type: ignore[method-assign]
    exchange.Exchange.report = timed_report  # type: ignore[method-assign]
    upstream.UpstreamConnection.data_received = on_response_read  # type: ignore[method-assign]
    wrap_made(connection.DownstreamConnection, "write downstream")
    wrap_made(upstream.UpstreamConnection, "write upstream")

    def dump() -> None:
        out = os.environ.get("MESHTRACE_LATENCY_HOOKS_OUT")
        if out:
            with open(out, "w") as f:
                kept = requests[SKIP:]
                first = kept[0][0] if kept else 0.0
                parts = {**samples, **waits(kept, [r for r in reports if r[0] >= first])}
                json.dump({name: _percentiles(values, skip=0 if name not in samples else SKIP)
                           for name, values in parts.items()}, f)
    atexit.register(dump)
