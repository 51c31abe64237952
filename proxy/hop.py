"""What one request through a sidecar leaves behind, shared by the span, the metrics and the access log.

The connection manager fills a `Hop` as the exchange goes on and hands the finished record to every
`HopObserver`; observers never see sockets, so each can be tested with a hand-made `Hop`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

__all__ = ["Direction", "Hop", "HopObserver", "Workload"]

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


@dataclass(slots=True)
class Hop:
    """One HTTP request/response (or one TCP connection) through a listener."""

    direction: Direction
    start_time: float                 # time.time() when the request head was parsed
    protocol: str = "HTTP/1.1"        # "HTTP/1.1", "HTTP/1.0" or "tcp"
    method: str = ""
    path: str = ""                    # request target as received, query included
    authority: str = ""
    scheme: str = "http"
    user_agent: str = ""
    request_id: str = ""
    downstream_address: str = ""      # "ip:port" of the peer that connected to us
    upstream_address: str = ""        # "ip:port" of the host we forwarded to, "" if none
    upstream_cluster: str = ""        # Envoy-style cluster name, e.g. "outbound|8080||reviews"
    route_name: str = ""
    status: int = 0                   # 0 when no response was sent
    response_flags: str = "-"         # Envoy response flags, comma-joined, "-" when none
    request_bytes: int = 0            # body bytes received from downstream
    response_bytes: int = 0           # body bytes sent to downstream
    duration_ms: float = 0.0          # request head parsed -> last response byte written
    upstream_service_time_ms: float | None = None
    trace_id: str = ""                # 32 hex, "" when not traced
    span_id: str = ""
    source: Workload = field(default_factory=Workload)
    destination: Workload = field(default_factory=Workload)
    attempts: int = 0                 # upstream attempts made (retries + 1), 0 when answered locally
    grpc_status: int | None = None    # a gRPC status, for a connection manager that reads one (none does yet)


class HopObserver(Protocol):
    def on_hop(self, hop: Hop) -> None:
        """Called once per finished hop; must be cheap and must never raise into the proxy."""
