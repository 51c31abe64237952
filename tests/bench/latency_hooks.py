"""Timing hooks that `probe_latency_parts.py` loads into a sidecar process (through a generated sitecustomize).

They wrap the two protocol callbacks a proxied request runs in (the downstream read that parses the request and
writes it upstream; the upstream read that writes the response back) and the transports' writes inside them, and
pair the two callbacks of each request when only one request is in flight (true for most requests at 1000 req/s).
At exit they write percentiles (µs) as JSON to $MESHTRACE_LATENCY_HOOKS_OUT. Not for production: each hook costs
about a microsecond.
"""

from __future__ import annotations

import atexit
import json
import os
import time
from collections.abc import Callable
from typing import Any

from meshtrace.proxy import connection, upstream

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


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(v * 1e6 for v in values[SKIP:])
    if not ordered:
        return {"n": 0}
    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 1)
    return {"n": len(ordered), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": round(ordered[-1], 1)}


def install() -> None:
    samples: dict[str, list[float]] = {name: [] for name in (
        "request callback", "write upstream", "upstream round trip", "response callback", "write downstream",
        "in sidecar")}
    state = {"open": 0, "begin": 0.0, "sent": 0.0}

    down_received: Callable[..., None] = connection.DownstreamConnection.data_received
    up_received: Callable[..., None] = upstream.UpstreamConnection.data_received

    def on_request_read(self: Any, data: bytes) -> None:
        begin = _now()
        down_received(self, data)
        sent = _now()
        samples["request callback"].append(sent - begin)
        state["open"] += 1
        state["begin"], state["sent"] = begin, sent

    def on_response_read(self: Any, data: bytes) -> None:
        begin = _now()
        up_received(self, data)
        end = _now()
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

    connection.DownstreamConnection.data_received = on_request_read  # type: ignore[method-assign]
    upstream.UpstreamConnection.data_received = on_response_read  # type: ignore[method-assign]
    wrap_made(connection.DownstreamConnection, "write downstream")
    wrap_made(upstream.UpstreamConnection, "write upstream")

    def dump() -> None:
        out = os.environ.get("MESHTRACE_LATENCY_HOOKS_OUT")
        if out:
            with open(out, "w") as f:
                json.dump({name: _percentiles(values) for name, values in samples.items()}, f)
    atexit.register(dump)
