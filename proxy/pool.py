"""Keep-alive connection pools, one per upstream host, with an idle sweep instead of a timer per connection.

Theory of operation. `acquire_idle()` lends the most recently used live connection (LIFO keeps a few warm and
lets the rest age out); when there is none the caller opens one with `connect()`, the only place a task is
made, once per new upstream connection rather than per request. A connection comes back through `release()`
only after a complete response to a completely sent request; anything else is closed by its owner. Idle
connections older than `idle_timeout` are closed by a sweep that runs while any pool holds one, so an upstream's
own keep-alive timeout (nginx 75 s, gunicorn 2 s) is rarely raced; the race that remains is handled by the
exchange, which retries a bodiless request once when a reused connection dies before any response byte.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

from . import flags
from .errors import UpstreamError
from .localreply import CONNECT_FAILURE, reset_before_headers
from .upstream import UpstreamConnection

if TYPE_CHECKING:
    from .breaker import ClusterLimits

__all__ = ["ConnectionPool", "PoolSet"]


class ConnectionPool:
    """The idle keep-alive connections to one `host:port`."""

    __slots__ = ("address", "connect_timeout", "host", "idle", "idle_timeout", "limits", "loop", "max_idle", "opened",
                 "port")

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, port: int, *, connect_timeout: float,
                 idle_timeout: float, max_idle: int, limits: ClusterLimits | None = None) -> None:
        self.loop = loop
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self.idle: list[UpstreamConnection] = []
        self.opened = 0                 # connections ever opened: tests read it to prove reuse
        self.limits = limits            # the cluster's circuit breakers (DestinationRule connectionPool)

    def acquire_idle(self) -> UpstreamConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        return None

    async def connect(self) -> UpstreamConnection:
        """A new connection, or UpstreamError(UF) with Envoy's wording and the OS reason.

        With cluster limits the caller holds a connection slot; a failed connect gives it back here, an open
        connection gives it back when it closes (`UpstreamConnection.connection_lost`).
        """
        try:
            return await self._connect()
        except BaseException:
            if self.limits is not None:
                self.limits.connection_closed()
            raise

    async def _connect(self) -> UpstreamConnection:
        try:
            async with asyncio.timeout(self.connect_timeout):
                transport, conn = await self.loop.create_connection(
                    lambda: UpstreamConnection(self), self.host, self.port)
        except TimeoutError as exc:
            raise UpstreamError(flags.UF, reset_before_headers(CONNECT_FAILURE, "connect timeout")) from exc
        except OSError as exc:
            detail = f"delayed connect error: {exc.errno}" if exc.errno else str(exc)
            raise UpstreamError(flags.UF, reset_before_headers(CONNECT_FAILURE, detail)) from exc
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.opened += 1
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        limits = self.limits
        if limits is not None and not conn.closed:
            if not limits.keep_connection(conn.requests):
                conn.close()                # maxRequestsPerConnection reached
                return
            waiter = limits.take_waiter(self)
            if waiter is not None:
                conn.reused = True
                waiter.on_connection(conn)  # straight to a request waiting for a connection of this pool
                return
        if conn.closed or len(self.idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = self.loop.time()
        self.idle.append(conn)

    def sweep(self, now: float) -> None:
        limit = now - self.idle_timeout
        keep = []
        for conn in self.idle:
            if conn.closed:
                continue
            if conn.idle_since < limit:
                conn.close()
            else:
                keep.append(conn)
        self.idle = keep

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle = []


class PoolSet:
    """Every pool of one sidecar, keyed by `(host, port)`; issue 5's clusters hold a pool per endpoint."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, connect_timeout: float = 5.0,
                 idle_timeout: float = 60.0, max_idle: int = 64) -> None:
        self.loop = loop
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self.pools: dict[tuple[str, int], ConnectionPool] = {}
        self.limited: dict[tuple[str, int, str], ConnectionPool] = {}     # pools of clusters with limits
        self._sweeper: asyncio.TimerHandle | None = None

    def get(self, host: str, port: int) -> ConnectionPool:
        key = (host, port)
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = ConnectionPool(
                self.loop, host, port, connect_timeout=self.connect_timeout, idle_timeout=self.idle_timeout,
                max_idle=self.max_idle)
            if self._sweeper is None:
                self._sweeper = self.loop.call_later(self.idle_timeout / 2, self._sweep)
        return pool

    def get_limited(self, host: str, port: int, limits: ClusterLimits) -> ConnectionPool:
        """The pool of `host:port` for one cluster with circuit breakers: its connections count for that cluster
        only. The newest limits object of a cluster name wins (a rules reload makes new ones)."""
        key = (host, port, limits.name)
        pool = self.limited.get(key)
        if pool is None:
            pool = self.limited[key] = ConnectionPool(
                self.loop, host, port, connect_timeout=limits.connect_timeout or self.connect_timeout,
                idle_timeout=limits.idle_timeout or self.idle_timeout, max_idle=self.max_idle, limits=limits)
            if self._sweeper is None:
                self._sweeper = self.loop.call_later(self.idle_timeout / 2, self._sweep)
        elif pool.limits is not limits:
            pool.limits = limits
            pool.close()                    # idle connections counted by the old limits go
        return pool

    def all(self) -> list[ConnectionPool]:
        return [*self.pools.values(), *self.limited.values()]

    def _sweep(self) -> None:
        now = self.loop.time()
        for pool in self.all():
            pool.sweep(now)
        self._sweeper = self.loop.call_later(self.idle_timeout / 2, self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for pool in self.all():
            pool.close()
