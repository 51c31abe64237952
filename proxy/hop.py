"""What one request through a sidecar leaves behind, shared by the span, the metrics and the access log.

The connection manager fills a `Hop` as the exchange goes on and hands the finished record to every
`HopObserver`; observers never see sockets, so each can be tested with a hand-made `Hop`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["UNKNOWN", "Direction", "Hop", "HopObserver", "Workload"]

Direction = Literal["inbound", "outbound"]


@dataclass(frozen=True, slots=True)
class Workload:
    """Identity of one side of a hop, as Istio labels it; unknown parts stay 'unknown'."""

    workload: str = "unknown"
    namespace: str = "unknown"
    app: str = "unknown"
    version: str = "unknown"
    service: str = "unknown"          # destination_service (host name, e.g. reviews.default.svc.cluster.local)
    canonical_service: str = "unknown"
    principal: str = "unknown"


# Shared by every hop that knows nothing of one side: frozen, so one instance serves all.
UNKNOWN = Workload()


# Its own __init__, not the dataclass one: compiled, the generated __init__ is interpreted code, and its two
# `default_factory=Workload` calls ran Workload's frozen __init__ (an object.__setattr__ per field) on every hop:
# about 4 µs and 28k instructions per request, of which the exchange then overwrote both.
@dataclass(slots=True, init=False)
class Hop:
    """One HTTP request/response (or one TCP connection) through a listener."""

    direction: Direction
    start_time: float                 # time.time() when the request head was parsed
    protocol: str                     # "HTTP/1.1", "HTTP/1.0" or "tcp"
    method: str
    path: str                         # request target as received, query included
    authority: str
    scheme: str
    user_agent: str
    request_id: str
    downstream_address: str           # "ip:port" of the peer that connected to us
    upstream_address: str             # "ip:port" of the host we forwarded to, "" if none
    upstream_cluster: str             # Envoy-style cluster name, e.g. "outbound|8080||reviews"
    route_name: str
    status: int                       # 0 when no response was sent
    response_flags: str               # Envoy response flags, comma-joined, "-" when none
    request_bytes: int                # body bytes received from downstream
    response_bytes: int               # body bytes sent to downstream
    duration_ms: float                # request head parsed -> last response byte written
    upstream_service_time_ms: float | None
    trace_id: str                     # 32 hex, "" when not traced
    span_id: str
    source: Workload
    destination: Workload
    attempts: int                     # upstream attempts made (retries + 1), 0 when answered locally
    grpc_status: int | None           # a gRPC status, for a connection manager that reads one (none does yet)

    def __init__(  # noqa: PLR0917  (tests and benches build hops by position and by keyword)
        self,
        direction: Direction,
        start_time: float,
        protocol: str = "HTTP/1.1",
        method: str = "",
        path: str = "",
        authority: str = "",
        scheme: str = "http",
        user_agent: str = "",
        request_id: str = "",
        downstream_address: str = "",
        upstream_address: str = "",
        upstream_cluster: str = "",
        route_name: str = "",
        status: int = 0,
        response_flags: str = "-",
        request_bytes: int = 0,
        response_bytes: int = 0,
        duration_ms: float = 0.0,
        upstream_service_time_ms: float | None = None,
        trace_id: str = "",
        span_id: str = "",
        source: Workload = UNKNOWN,
        destination: Workload = UNKNOWN,
        attempts: int = 0,
        grpc_status: int | None = None,
    ) -> None:
        self.direction = direction
        self.start_time = start_time
        self.protocol = protocol
        self.method = method
        self.path = path
        self.authority = authority
        self.scheme = scheme
        self.user_agent = user_agent
        self.request_id = request_id
        self.downstream_address = downstream_address
        self.upstream_address = upstream_address
        self.upstream_cluster = upstream_cluster
        self.route_name = route_name
        self.status = status
        self.response_flags = response_flags
        self.request_bytes = request_bytes
        self.response_bytes = response_bytes
        self.duration_ms = duration_ms
        self.upstream_service_time_ms = upstream_service_time_ms
        self.trace_id = trace_id
        self.span_id = span_id
        self.source = source
        self.destination = destination
        self.attempts = attempts
        self.grpc_status = grpc_status

class HopObserver(Protocol):
    def on_hop(self, hop: Hop) -> None:
        """Called once per finished hop; must be cheap and must never raise into the proxy."""
