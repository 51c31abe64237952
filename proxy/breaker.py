"""Envoy's circuit breakers for one cluster, from a DestinationRule's `connectionPool`.

Theory of operation. A `CircuitBreaker` is a counter with a limit (`try_acquire()` / `release()`); `None` means
no limit (Istio sets every threshold to 2^32-1 unless the rule says otherwise). `ClusterLimits` holds the three
of one `outbound|port|subset|host` cluster:

- `connections` (`tcp.maxConnections`): upstream connections of the cluster, open or opening, busy or idle;
- `pending` (`http.http1MaxPendingRequests`): requests waiting for a connection because `connections` is full;
  one more overflows: 503 `UO`;
- `retries` (`http.maxRetries`): retries in progress across the cluster; one more is not made, the failed
  try's answer goes to the client and the record gets `UO`;

and `max_requests_per_connection` (`http.maxRequestsPerConnection`): a connection that served that many
requests is closed instead of going back to the pool. Waiting requests are woken in arrival order: a connection
released by its pool goes to the first waiter for that same pool, a freed connection slot to the first waiter.
Plain objects, no sockets: the exchange and the pool call them.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Protocol

from .istio_config import PoolPolicy

if TYPE_CHECKING:
    from .upstream import UpstreamConnection

__all__ = ["CircuitBreaker", "ClusterLimits", "Waiter"]


class CircuitBreaker:
    """`limit` concurrent holders at most (None: unlimited); counts the refusals in `overflows`."""

    __slots__ = ("active", "limit", "overflows")

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.active = 0
        self.overflows = 0

    def try_acquire(self) -> bool:
        if self.limit is not None and self.active >= self.limit:
            self.overflows += 1
            return False
        self.active += 1
        return True

    def release(self) -> None:
        if self.active > 0:
            self.active -= 1

    @property
    def full(self) -> bool:
        return self.limit is not None and self.active >= self.limit

    def describe(self) -> dict[str, int | None]:
        return {"limit": self.limit, "active": self.active, "overflows": self.overflows}


class Waiter(Protocol):
    """A request waiting for a connection (the exchange)."""

    @property
    def wait_key(self) -> object: ...         # the pool it wants a connection of
    def on_slot(self) -> None: ...            # a connection slot is free: open one (the slot is already held)
    def on_connection(self, conn: UpstreamConnection) -> None: ...     # a released connection, lent to it


class ClusterLimits:
    __slots__ = ("connect_timeout", "connections", "idle_timeout", "max_requests_per_connection", "name", "pending",
                 "retries", "waiters")

    def __init__(self, name: str, policy: PoolPolicy) -> None:
        self.name = name
        self.connections = CircuitBreaker(policy.max_connections)
        self.pending = CircuitBreaker(policy.http1_max_pending_requests)
        self.retries = CircuitBreaker(policy.max_retries)
        self.max_requests_per_connection = policy.max_requests_per_connection or None
        self.connect_timeout = policy.connect_timeout          # None: the sidecar's own
        self.idle_timeout = policy.idle_timeout
        self.waiters: deque[Waiter] = deque()

    def wait(self, waiter: Waiter) -> bool:
        """Queue a request for a connection; False when the pending limit overflows (503 `UO`)."""
        if not self.pending.try_acquire():
            return False
        self.waiters.append(waiter)
        return True

    def cancel(self, waiter: Waiter) -> None:
        """The waiting request ended (client gone, timeout): it no longer holds a pending slot."""
        try:
            self.waiters.remove(waiter)
        except ValueError:
            return
        self.pending.release()

    def take_waiter(self, key: object) -> Waiter | None:
        """The first request waiting for a connection of `key` (a pool releasing one), its pending slot freed."""
        for waiter in self.waiters:
            if waiter.wait_key is key:
                self.waiters.remove(waiter)
                self.pending.release()
                return waiter
        return None

    def connection_closed(self) -> None:
        """A connection of the cluster closed (or failed to open): its slot goes to the first waiter, if any."""
        if self.waiters:
            waiter = self.waiters.popleft()
            self.pending.release()
            waiter.on_slot()                # keeps the connection slot for the waiter's new connection
        else:
            self.connections.release()

    def keep_connection(self, requests_served: int) -> bool:
        limit = self.max_requests_per_connection
        return limit is None or requests_served < limit

    def describe(self) -> dict[str, object]:
        return {"connections": self.connections.describe(), "pending": self.pending.describe(),
                "retries": self.retries.describe(), "max_requests_per_connection": self.max_requests_per_connection,
                "waiting": len(self.waiters)}
