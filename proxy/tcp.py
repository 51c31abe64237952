"""Plain TCP pass-through for ports that are not HTTP, with the istio_tcp_* metrics.

Theory of operation: each accepted connection becomes a pair of asyncio protocols joined by a `_Pipe`.
The downstream socket is paused until the upstream connection exists, so nothing is buffered in between.
Bytes go straight from one transport's `data_received` to the other's `write`; when a write buffer passes
its high-water mark the transport calls `pause_writing`, and we stop reading from the side that feeds it
(flow control with no awaits and bounded memory). An EOF from one side becomes a `write_eof` to the other
(half-close), and the pair closes once both directions have ended. A reset on one side aborts the other.

Metrics follow Istio: the connection is counted as opened once the upstream attempt has settled (so a
failed connect carries the `UF` flag), bytes are added every `report_interval` seconds and at close, and the
finished `Hop` (protocol "tcp") goes to the other observers, such as the access log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, cast

from .hop import UNKNOWN, Direction, Hop, HopObserver, Workload

__all__ = ["TcpConnectionCounters", "TcpObserver", "serve_tcp"]

_log = logging.getLogger("meshtrace.proxy.tcp")


class TcpConnectionCounters(Protocol):
    """What a TCP observer keeps for one live connection."""

    def add_bytes(self, received: int, sent: int) -> None:
        """Bytes received from / sent to the downstream peer since the last call."""

    def close(self) -> None:
        """The connection has closed (called once)."""


class TcpObserver(Protocol):
    """Receives TCP connection events; `IstioMetrics` is one."""

    def on_tcp_open(self, hop: Hop) -> TcpConnectionCounters:
        """A connection opened (its upstream attempt settled: flags say `UF` when it failed)."""
        ...


class _NullCounters:
    def add_bytes(self, received: int, sent: int) -> None:
        pass

    def close(self) -> None:
        pass


_NULL_COUNTERS = _NullCounters()


def _address(transport: asyncio.BaseTransport, key: str) -> str:
    info = transport.get_extra_info(key)
    if isinstance(info, tuple) and len(info) >= 2:
        host = str(info[0])
        return f"[{host}]:{info[1]}" if ":" in host else f"{host}:{info[1]}"
    return ""


def _reset(transport: asyncio.Transport) -> None:
    """Close with a TCP RST: SO_LINGER 0 makes the kernel reset instead of sending FIN."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


@dataclass(frozen=True, slots=True, kw_only=True)
class _Config:
    upstream_host: str
    upstream_port: int
    metrics: TcpObserver | None
    observers: tuple[HopObserver, ...]
    direction: Direction
    source: Workload
    destination: Workload
    connect_timeout: float
    report_interval: float
    upstream_cluster: str


class _Pipe:
    """One downstream connection and its upstream: the state both protocols share."""

    def __init__(self, config: _Config, down: asyncio.Transport) -> None:
        self.config = config
        self.loop = asyncio.get_running_loop()
        self.down = down
        self.up: asyncio.Transport | None = None
        self.connecting = True
        self.down_eof = self.up_eof = False
        self.down_lost = self.up_lost = False
        self.finished = False
        self.started = time.monotonic()
        self.hop = Hop(direction=config.direction, start_time=time.time(), protocol="tcp",
                       downstream_address=_address(down, "peername"), upstream_cluster=config.upstream_cluster,
                       source=config.source, destination=config.destination)
        # Bytes that arrived before the upstream existed: at most one read, since reading pauses at once
        # (uvloop may deliver a read before our pause_reading() in connection_made takes effect).
        self.pending: list[bytes] = []
        self.counters: TcpConnectionCounters = _NULL_COUNTERS
        self.reported_received = self.reported_sent = 0
        self.timer: asyncio.TimerHandle | None = None

    # -- upstream connect ----------------------------------------------------------------------------------

    async def connect(self) -> None:
        config = self.config
        try:
            transport, _ = await asyncio.wait_for(
                self.loop.create_connection(lambda: _Upstream(self), config.upstream_host, config.upstream_port),
                config.connect_timeout)
        except (OSError, TimeoutError) as exc:
            _log.debug("tcp upstream %s:%s connect failed: %s", config.upstream_host, config.upstream_port, exc)
            self.hop.response_flags = "UF"
            self._open_counters()
            self.connecting = False
            if not self.down_lost:
                self.down.close()      # as Envoy: the downstream sees its connection closed
            else:
                self._finish()
            return
        except BaseException:
            self.connecting = False
            self.down.abort()
            raise
        self.up = transport
        self.hop.upstream_address = _address(transport, "peername")
        self._open_counters()
        self.connecting = False
        if self.down_lost:
            transport.close()
            return
        for chunk in self.pending:
            transport.write(chunk)
        self.pending.clear()
        if self.down_eof:
            if transport.can_write_eof():
                transport.write_eof()
        else:
            self.down.resume_reading()
        if config.report_interval > 0:
            self.timer = self.loop.call_later(config.report_interval, self._report_periodically)

    def _open_counters(self) -> None:
        metrics = self.config.metrics
        if metrics is None:
            return
        try:
            self.counters = metrics.on_tcp_open(self.hop)
        except Exception:
            _log.exception("tcp metrics observer failed")

    # -- events from either side ---------------------------------------------------------------------------

    def on_eof(self, from_downstream: bool) -> None:
        if from_downstream:
            self.down_eof = True
            if self.up is not None and self.up.can_write_eof():
                self.up.write_eof()    # half-close: the upstream still answers
        else:
            self.up_eof = True
            if self.down.can_write_eof():
                self.down.write_eof()
        if self.down_eof and self.up_eof:
            # Both directions ended: close() sends what is still buffered, then closes.
            self.down.close()
            if self.up is not None:
                self.up.close()

    def on_lost(self, from_downstream: bool, exc: Exception | None) -> None:
        if from_downstream:
            self.down_lost = True
            other = self.up
            other_lost = self.up_lost
        else:
            self.up_lost = True
            other = self.down
            other_lost = self.down_lost
        if exc is not None and self.hop.response_flags == "-":
            self.hop.response_flags = "DC" if from_downstream else "UC"
        if other is not None and not other_lost:
            if exc is not None:
                _reset(other)          # pass a reset on rather than pretend the stream ended cleanly
            else:
                other.close()
        if self.down_lost and (self.up is None or self.up_lost) and not self.connecting:
            self._finish()

    # -- reporting -----------------------------------------------------------------------------------------

    def _report(self) -> None:
        hop = self.hop
        received = hop.request_bytes - self.reported_received
        sent = hop.response_bytes - self.reported_sent
        if received or sent:
            self.reported_received = hop.request_bytes
            self.reported_sent = hop.response_bytes
            try:
                self.counters.add_bytes(received, sent)
            except Exception:
                _log.exception("tcp metrics observer failed")

    def _report_periodically(self) -> None:
        self._report()
        self.timer = self.loop.call_later(self.config.report_interval, self._report_periodically)

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
        self.hop.duration_ms = (time.monotonic() - self.started) * 1000.0
        self._report()
        try:
            self.counters.close()
        except Exception:
            _log.exception("tcp metrics observer failed")
        for observer in self.config.observers:
            try:
                observer.on_hop(self.hop)
            except Exception:
                _log.exception("hop observer %r failed", observer)


class _Downstream(asyncio.Protocol):
    def __init__(self, config: _Config) -> None:
        self._config = config
        self._pipe: _Pipe | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's TCPTransport does not derive from asyncio.Transport.
        stream = cast(asyncio.Transport, transport)
        stream.pause_reading()         # nothing is read until there is somewhere to send it
        pipe = self._pipe = _Pipe(self._config, stream)
        task = pipe.loop.create_task(pipe.connect())
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)

    def data_received(self, data: bytes) -> None:
        pipe = self._pipe
        if pipe is None:
            return
        pipe.hop.request_bytes += len(data)
        if pipe.up is None:
            pipe.pending.append(data)
            pipe.down.pause_reading()
            return
        pipe.up.write(data)

    def eof_received(self) -> bool:
        assert self._pipe is not None
        self._pipe.on_eof(from_downstream=True)
        return True                    # keep our sending direction open

    def pause_writing(self) -> None:
        # The downstream is slower than the upstream: stop reading the upstream until it catches up.
        pipe = self._pipe
        if pipe is not None and pipe.up is not None:
            pipe.up.pause_reading()

    def resume_writing(self) -> None:
        pipe = self._pipe
        if pipe is not None and pipe.up is not None and not pipe.up_eof:
            pipe.up.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._pipe is not None:
            self._pipe.on_lost(from_downstream=True, exc=exc)


class _Upstream(asyncio.Protocol):
    def __init__(self, pipe: _Pipe) -> None:
        self._pipe = pipe

    def data_received(self, data: bytes) -> None:
        pipe = self._pipe
        pipe.hop.response_bytes += len(data)
        pipe.down.write(data)

    def eof_received(self) -> bool:
        self._pipe.on_eof(from_downstream=False)
        return True

    def pause_writing(self) -> None:
        self._pipe.down.pause_reading()

    def resume_writing(self) -> None:
        if not self._pipe.down_eof:
            self._pipe.down.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._pipe.on_lost(from_downstream=False, exc=exc)


_TASKS: set[asyncio.Task[None]] = set()   # strong references: the loop keeps only weak ones


async def serve_tcp(listen_host: str, listen_port: int, upstream_host: str, upstream_port: int,
                    metrics: TcpObserver | None = None, *, observers: Sequence[HopObserver] = (),
                    direction: Direction = "inbound", source: Workload | None = None,
                    destination: Workload | None = None, connect_timeout: float = 10.0,
                    report_interval: float = 15.0, upstream_cluster: str = "") -> asyncio.Server:
    """Listen on `listen_host:listen_port` and pass every connection through to the upstream.

    `metrics` gets the istio_tcp_* events; `observers` get each finished connection as a `Hop`.
    `source`/`destination` label the metrics (inbound: the local workload is the destination).
    `report_interval` (seconds, 15 like Istio; 0 = only at close) paces byte-count updates of long connections.
    Closing the returned server stops accepting; connections in flight carry on until their peers close.
    """
    config = _Config(upstream_host=upstream_host, upstream_port=upstream_port, metrics=metrics,
                     observers=tuple(observers), direction=direction, source=source or UNKNOWN,
                     destination=destination or UNKNOWN, connect_timeout=connect_timeout,
                     report_interval=report_interval, upstream_cluster=upstream_cluster)
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Downstream(config), listen_host, listen_port)
