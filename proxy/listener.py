"""A listener: one bound port, its direction, and what its connections share (router, pools, tracer, observers)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from .codec import MAX_HEADER_BYTES
from .headers import HOP_BY_HOP, TRACE_HEADERS, connection_tokens
from .hop import Direction, Hop, HopObserver, Workload
from .metrics import IstioMetrics
from .peer import PEER_HEADER, encode_peer
from .pool import PoolSet
from .reports import ReportQueue
from .request_id import prefill
from .router import Router
from .tracing import HopTracer

__all__ = ["Limits", "Listener", "ListenerContext"]

logger = logging.getLogger("meshtrace.proxy")


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection limits and timeouts (seconds)."""

    header_timeout: float = 10.0        # first byte of a request head -> whole head, else 408
    idle_timeout: float = 60.0          # keep-alive connection with no request in flight
    max_header_bytes: int = MAX_HEADER_BYTES
    stream_idle_timeout: float = 300.0  # a request in flight with no byte moving either way (Envoy's 5 min)
    max_pending_body: int = 256 * 1024  # request body buffered while the upstream connects
    write_buffer_high: int = 256 * 1024


@dataclass(eq=False)
class ListenerContext:
    """Shared by every connection of one listener; read on the hot path, so plain attributes."""

    loop: asyncio.AbstractEventLoop
    direction: Direction
    router: Router
    pools: PoolSet
    identity: Workload
    tracer: HopTracer | None = None
    observers: Sequence[HopObserver] = ()
    limits: Limits = field(default_factory=Limits)
    connections: set[object] = field(default_factory=set)
    draining: bool = False
    requests: int = 0                   # hops finished, for /stats
    peer_header: bytes = field(init=False)
    peer_value: bytes = field(init=False)
    request_drop: frozenset[bytes] = field(init=False)
    response_drop: frozenset[bytes] = field(init=False)
    inbound: bool = field(init=False)
    # The observers split once: the Istio metrics count straight from the exchange's values (`count_http`), the
    # others get a Hop; with none of those and no span the exchange makes no Hop at all.
    counter: IstioMetrics | None = field(init=False)
    hop_observers: tuple[HopObserver, ...] = field(init=False)
    # Finished exchanges whose telemetry waits until the listener's responses in flight are out (proxy.reports).
    reports: ReportQueue = field(init=False)
    _drops: dict[tuple[bool, bytes], frozenset[bytes]] = field(init=False, default_factory=dict)
    # Connection value -> response_drop plus its names, for the one or two values upstreams repeat (nginx's
    # `keep-alive`): read inline by the exchange, filled by drop_with.
    response_drops: dict[bytes, frozenset[bytes]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.peer_header = PEER_HEADER.encode()
        self.peer_value = encode_peer(self.identity).encode("latin-1")
        self.inbound = self.direction == "inbound"
        self.reports = ReportQueue(self.loop)
        self.reports.idle = self.prepare
        self.observers = observers = tuple(self.observers)     # fixed from here on: `counter` is chosen once
        self.counter = next((o for o in observers if type(o) is IstioMetrics), None)
        self.hop_observers = tuple(o for o in observers if o is not self.counter)
        # Stripped from every forwarded request: hop-by-hop headers, Expect (the proxy answers 100-continue
        # itself), a peer header nobody may spoof, and, when this proxy traces, the old trace headers.
        drop = HOP_BY_HOP | {b"expect", self.peer_header}
        self.request_drop = drop | TRACE_HEADERS if self.tracer is not None else drop
        # Stripped from every response: hop-by-hop headers and the peer header (read on the outbound side).
        self.response_drop = HOP_BY_HOP | {self.peer_header}

    def prepare(self, until: int) -> bool:
        """For the next requests, when the loop is idle: request ids drawn, root spans made (proxy.reports), until
        `until` (`perf_counter_ns()`) after one span at least; returns whether more spans are wanted."""
        prefill()
        return self.tracer is not None and self.tracer.prepare(until)

    def drop_with(self, response: bool, connection: bytes) -> frozenset[bytes]:
        """`request_drop`/`response_drop` plus the names a `Connection` value lists, cached: peers send the same
        one or two values (`keep-alive`, `close`) every time."""
        key = (response, connection)
        drop = self._drops.get(key)
        if drop is None:
            drop = (self.response_drop if response else self.request_drop) | connection_tokens(connection)
            if len(self._drops) >= 64:
                self._drops.clear()     # a client inventing Connection values must not grow this forever
                self.response_drops.clear()
            self._drops[key] = drop
            if response:
                self.response_drops[connection] = drop
        return drop

    def report(self, hop: Hop) -> None:
        """Hand a finished hop to every observer; an observer's bug is logged, never raised into the proxy."""
        self.requests += 1
        if self.counter is not None:
            self.counter.on_hop(hop)
        self.observe(hop)

    def observe(self, hop: Hop) -> None:
        """Hand a finished hop to the observers other than the metrics (`report`'s second half: an exchange counts
        its metrics without a Hop)."""
        for observer in self.hop_observers:
            try:
                observer.on_hop(hop)
            except Exception:
                logger.exception("hop observer %r failed", observer)


class Listener:
    """Binds `host:port` and serves DownstreamConnections for `context`."""

    def __init__(self, context: ListenerContext, host: str, port: int) -> None:
        self.context = context
        self.host = host
        self.port = port
        self.server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        from .connection import DownstreamConnection

        context = self.context
        self.server = await context.loop.create_server(
            lambda: DownstreamConnection(context), self.host, self.port, reuse_address=True, backlog=1024)
        # Through Any: typeshed says a tuple, uvloop returns a list, and compiled code would check the type.
        sock: socket.socket = cast(Any, self.server).sockets[0]
        self.port = sock.getsockname()[1]       # port 0 in tests: the one the OS chose
        if context.limits.stream_idle_timeout > 0:
            self._sweeper = context.loop.call_later(self._sweep_period, self._sweep)

    @property
    def _sweep_period(self) -> float:
        return self.context.limits.stream_idle_timeout / 4

    def _sweep(self) -> None:
        """Stream idle timeout without a timer per request: each connection counts the sweeps it slept through."""
        ticks = 4
        for conn in list(self.context.connections):
            conn.idle_sweep(ticks)  # type: ignore[attr-defined]
        self._sweeper = self.context.loop.call_later(self._sweep_period, self._sweep)

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    def stop_sweeping(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def drain(self) -> None:
        """Stop accepting and ask every connection to close once its in-flight request is answered."""
        self.stop_accepting()
        self.context.draining = True
        for conn in list(self.context.connections):
            conn.drain()  # type: ignore[attr-defined]

    @property
    def active(self) -> int:
        return len(self.context.connections)
