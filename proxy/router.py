"""Where a request goes: the inbound side always to the local app, the outbound side to the host it names.

Issue 5's Istio routing replaces these with rule matching; the contract stays `route(head) -> RouteDecision | None`
(None is answered with 404 `NR`), so the connection manager does not change.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import httptools

from .codec import RequestHead

if TYPE_CHECKING:
    from .balancer import Host
    from .breaker import ClusterLimits
    from .outlier import OutlierDetector
    from .policy import RoutePolicy

__all__ = ["InboundRouter", "OutboundRouter", "Route", "RouteDecision", "Router", "origin_form", "split_authority"]


@dataclass(frozen=True, slots=True)
class Route:
    """A resolved destination: one upstream host plus the names its telemetry carries."""

    host: str
    port: int
    cluster: str                    # Istio cluster name: `inbound|8080||` / `outbound|80||reviews`
    name: str                       # route name for logs and metrics
    span_path: str = "/*"           # the path part of Istio's span name; `/*` for a catch-all route
    timeout: float | None = 15.0    # seconds to wait for the response head (Envoy's default route timeout)
    limits: ClusterLimits | None = None     # the cluster's circuit breakers (DestinationRule connectionPool)
    health: tuple[OutlierDetector, Host] | None = None   # where each try's outcome is recorded (outlierDetection)
    endpoint: Host | None = None    # the rule cluster's host: its in-flight count is what LEAST_REQUEST reads


# One is built per request. Not frozen: a frozen dataclass pays an object.__setattr__ call per field; and its own
# __init__, not the dataclass one: compiled, the generated __init__ is interpreted code (about 2.4k instructions per
# decision), a written one is native; the defaults are its. Nothing changes a decision once made.
@dataclass(slots=True, init=False)
class RouteDecision:
    route: Route
    target: bytes                   # request target to send upstream (origin-form)
    authority: bytes                # Host the upstream sees
    rewrite_host: bool              # True when `authority` replaces the incoming Host (absolute-form requests)
    policy: RoutePolicy | None      # Istio rules: header edits, fault, retries (None: plain forwarding)
    no_host: bool                   # the cluster has no host to send to: 503 `UH`

    def __init__(self, route: Route, target: bytes, authority: bytes, rewrite_host: bool = False,  # noqa: PLR0917
                 policy: RoutePolicy | None = None, no_host: bool = False) -> None:
        self.route = route
        self.target = target
        self.authority = authority
        self.rewrite_host = rewrite_host
        self.policy = policy
        self.no_host = no_host


class Router(Protocol):
    def route(self, head: RequestHead, peer: str = "") -> RouteDecision | None: ...


def split_authority(authority: bytes, default_port: int = 80) -> tuple[str, int] | None:
    """`host[:port]` -> (host, port); None when the port is not a number in range or the host is empty."""
    text = authority.decode("latin-1").strip()
    if text.startswith("["):                    # IPv6 literal
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text.partition(":")
    if not host:
        return None
    if not port_text:
        return host.lower(), default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None
    return host.lower(), int(port_text)


@functools.lru_cache(maxsize=1024)
def _address(authority: bytes) -> tuple[str, int] | None:
    # Requests to a service repeat one Host: decode, split and lower it once (bounded for hostile Hosts).
    return split_authority(authority)


def outbound_target(head: RequestHead, own: set[tuple[str, int]]
                    ) -> tuple[bytes, bytes, bool, tuple[str, int]] | None:
    """Where an outbound request goes: (origin-form target, authority, Host rewritten?, (host, port)).

    Origin-form requests go where their Host says; absolute-form ones (the app uses us as HTTP_PROXY) where their
    URL says, with that authority replacing Host. None for anything else, including a request aimed at one of our
    own listeners, which would loop.
    """
    target = head.target
    rewrite = False
    if target[:1] == b"/":
        authority = head.hmap.get(b"host", b"")
    elif target.startswith(b"http://"):
        target, absolute = origin_form(target)
        if absolute is None:
            return None
        authority, rewrite = absolute, True
    else:
        return None
    address = _address(authority)
    if address is None or address in own:
        return None
    return target, authority, rewrite, address


def origin_form(target: bytes) -> tuple[bytes, bytes | None]:
    """(origin-form target, authority) for an absolute-form target; origin-form passes through."""
    if target[:1] == b"/" or target == b"*":
        return target, None
    # Any, not httptools' URL: its stubs type path, query, host and port as bytes and int, but an absent part is
    # None, which compiled code would refuse at the attribute read.
    url: Any = httptools.parse_url(target)
    path = url.path or b"/"
    origin = path + b"?" + url.query if url.query else path
    authority = url.host + (b":%d" % url.port if url.port else b"")
    return origin, authority


class InboundRouter:
    """Everything to the local app at `host:port`; the Host header is kept as the caller sent it."""

    def __init__(self, host: str, port: int, *, timeout: float | None = 15.0) -> None:
        self.route_ = Route(host, port, f"inbound|{port}||", "default", "/*", timeout)

    def route(self, head: RequestHead, peer: str = "") -> RouteDecision | None:
        target = head.target
        if target[:1] != b"/":                  # absolute-form (or `*`): origin_form() sorts it out
            target, authority = origin_form(target)
            if authority is not None:
                return RouteDecision(self.route_, target, authority, True)
        return RouteDecision(self.route_, target, head.hmap.get(b"host", b""))


class OutboundRouter:
    """To the `host:port` of an absolute-form target (HTTP_PROXY style), else of the Host header.

    Requests back to the sidecar's own listeners would loop forever and get no route; so do `https://`
    targets (this proxy does not originate TLS) and unparsable authorities.
    """

    def __init__(self, own_addresses: set[tuple[str, int]], *, timeout: float | None = 15.0,
                 max_cached: int = 1024) -> None:
        self.own = own_addresses
        self.timeout = timeout
        self.max_cached = max_cached
        self._routes: dict[tuple[str, int], Route] = {}

    def route(self, head: RequestHead, peer: str = "") -> RouteDecision | None:
        found = outbound_target(head, self.own)
        if found is None:
            return None
        target, authority, rewrite, address = found
        route = self._routes.get(address)
        if route is None:
            host, port = address
            route = Route(host, port, f"outbound|{port}||{host}", f"{host}:{port}", "/*", self.timeout)
            if len(self._routes) < self.max_cached:
                self._routes[address] = route
        return RouteDecision(route, target, authority, rewrite)
