"""The outbound router for Istio rules: VirtualService host lookup, first matching `http[]` rule, weighted
destination, DestinationRule subset and load balancer, giving the same `RouteDecision` as the plain routers.

Theory of operation. Everything is compiled when the rules load (`RuleRouter(rules, ...)`): matchers, splits,
clusters (ServiceEntry endpoints filtered by subset labels) and their balancers. Each VirtualService's rules
become one `MatchTable` (match_index.py): a request is dispatched on the field most rules need one exact value of
(say a header) and tries only the rules that could still match it, in Istio's first-match order, through
precompiled closures. A Host header value is split and its VirtualService looked up once, then cached.

A host no VirtualService names goes to its ServiceEntry/DestinationRule cluster if it has one, else to the plain
`OutboundRouter` (Istio's ALLOW_ANY passthrough). A host a VirtualService names but no rule matches gets no route
(404 `NR`). VirtualService `hosts` match the request's host exactly (case-insensitive, port ignored), as
`*.suffix` wildcards, or `*`. A mirror's cluster is resolved like a destination's, outlier detection included.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from meshtrace import ConfigError

from .balancer import Balancer, Host, make_balancer
from .breaker import ClusterLimits
from .codec import RequestHead
from .fault import FaultPolicy
from .istio_config import (
    ConsistentHash,
    Destination,
    HttpRoute,
    RuleSet,
    ServiceEntry,
    TrafficPolicy,
    VirtualService,
)
from .match_index import MatchTable
from .mirror import MirrorPolicy
from .outlier import OutlierDetector
from .policy import HeaderEdits, RoutePolicy, merge_edits
from .retry import RetryPolicy
from .router import OutboundRouter, Route, RouteDecision, outbound_target, split_authority
from .split import WeightedChoice
from .vs_match import RequestView

__all__ = ["MAX_CACHED_AUTHORITIES", "Cluster", "RuleRouter"]

MAX_CACHED_AUTHORITIES = 4096
_Destination = tuple[str, int, "MatchTable[_Rule] | None"]


class Cluster:
    """The hosts of one `outbound|port|subset|host` cluster and how to choose among them."""

    __slots__ = ("balancer", "hash_key", "hosts", "limits", "name", "only", "outlier", "policy")

    def __init__(self, name: str, hosts: list[Host], policy: TrafficPolicy | None, rng: random.Random, *,
                 limits: ClusterLimits | None = None, outlier: OutlierDetector | None = None) -> None:
        self.name = name
        self.hosts = hosts
        self.policy = policy
        self.limits = limits
        self.outlier = outlier
        ch = policy.consistent_hash if policy is not None else None
        self.balancer: Balancer = make_balancer(policy.simple if policy else "ROUND_ROBIN", ch is not None, rng)
        self.hash_key = _hash_key(ch) if ch is not None else None
        # One host and nothing that could eject it: no choice to make per request.
        self.only = hosts[0] if len(hosts) == 1 and outlier is None else None

    def pick(self, view: RequestView, peer: str) -> Host | None:
        if self.only is not None:
            return self.only
        hosts = self.hosts if self.outlier is None else self.outlier.healthy()
        if not hosts:
            return None
        if len(hosts) == 1:
            return hosts[0]
        key = self.hash_key(view, peer) if self.hash_key is not None else None
        return self.balancer.choose(hosts, key)


def _hash_key(ch: ConsistentHash) -> Callable[[RequestView, str], bytes | None]:
    if ch.header is not None:
        name = ch.header.encode("latin-1")
        return lambda view, peer: view.hmap.get(name)
    if ch.cookie is not None:
        prefix = ch.cookie.encode("latin-1") + b"="

        def cookie(view: RequestView, peer: str) -> bytes | None:
            for raw in view.hmap.get(b"cookie", b"").split(b";"):
                part = raw.strip()
                if part.startswith(prefix):
                    return part[len(prefix):]
            return None
        return cookie
    if ch.query_parameter is not None:
        qname = ch.query_parameter.encode("latin-1")
        return lambda view, peer: view.query.get(qname)
    return lambda view, peer: peer.rpartition(":")[0].encode() or None


class _Target:
    """One `route[]` destination of one rule: its cluster(s) by port and the Route objects handed out."""

    __slots__ = ("clusters", "policy", "resolve", "routes", "rule")

    def __init__(self, rule: _Rule, policy: RoutePolicy, resolve: Callable[[int], Cluster]) -> None:
        self.rule = rule
        self.policy = policy
        self.resolve = resolve
        self.clusters: dict[int, Cluster] = {}
        self.routes: dict[int, Route] = {}

    def cluster(self, request_port: int) -> Cluster:
        cluster = self.clusters.get(request_port)
        if cluster is None:
            cluster = self.clusters[request_port] = self.resolve(request_port)
        return cluster

    def route_for(self, cluster: Cluster, host: Host) -> Route:
        route = self.routes.get(id(host))
        if route is None:
            rule = self.rule
            route = Route(host.address, host.port, cluster.name, rule.name, rule.span_path, rule.timeout,
                          cluster.limits, (cluster.outlier, host) if cluster.outlier is not None else None, host)
            self.routes[id(host)] = route
        return route


class _Rule:
    __slots__ = ("name", "rewrite_authority", "rewrite_uri", "span_path", "split", "timeout")

    def __init__(self, vs: VirtualService, index: int, spec: HttpRoute) -> None:
        self.name = f"{vs.name or 'vs'}.{spec.name or index}"
        self.rewrite_uri = spec.rewrite_uri.encode() if spec.rewrite_uri is not None else None
        self.rewrite_authority = spec.rewrite_authority.encode() if spec.rewrite_authority is not None else None
        # As Istio, a route with a fault neither retries nor times out.
        self.timeout = spec.timeout if spec.fault is None else None
        first = spec.match[0].uri if len(spec.match) == 1 else None
        self.span_path = (first.value if first is not None and first.kind == "exact"
                          else first.value + "*" if first is not None and first.kind == "prefix" else "/*")
        self.split: WeightedChoice[_Target] | None = None


class RuleRouter:
    """`route(head, peer)` for the outbound listener from a RuleSet; ConfigError at build for dangling refs."""

    def __init__(self, rules: RuleSet, own: set[tuple[str, int]], *, rng: random.Random | None = None,
                 fallback_timeout: float | None = 15.0, clock: Callable[[], float] = time.monotonic,
                 indexed: bool = True) -> None:
        self.rules = rules
        self.rng = rng or random.Random()
        self.clock = clock
        self.outliers: dict[str, OutlierDetector] = {}  # outlier detection by cluster name, shared by its routes
        self.own = own
        self.fallback = OutboundRouter(own, timeout=fallback_timeout)
        self._se = {host: se for se in rules.service_entries for host in se.hosts}
        self._dr = {dr.host: dr for dr in rules.destination_rules}
        self._exact: dict[str, MatchTable[_Rule]] = {}
        self._wildcards: list[tuple[str, MatchTable[_Rule]]] = []
        self._defaults: dict[str, _Target] = {}
        self.limits: dict[str, ClusterLimits] = {}      # circuit breakers by cluster name, shared by its routes
        self._tables: list[MatchTable[_Rule]] = []     # one per VirtualService, in order, for describe()
        for vs in rules.virtual_services:
            compiled = MatchTable([(self._compile(vs, i, spec), spec.match) for i, spec in enumerate(vs.http)],
                                  indexed=indexed)
            self._tables.append(compiled)
            for host in vs.hosts:
                if host.startswith("*"):
                    self._wildcards.append((host[1:], compiled))
                else:
                    self._exact.setdefault(host, compiled)
        self._wildcards.sort(key=lambda pair: -len(pair[0]))
        # Host header value -> (host, port, its VirtualService's rules), None for no route (our own listener, or
        # not host[:port]): requests to a service repeat one Host, so it is decoded and looked up once.
        self._by_authority: dict[bytes, _Destination | None] = {}

    # -- compile -------------------------------------------------------------------------------------------------
    def _compile(self, vs: VirtualService, index: int, spec: HttpRoute) -> _Rule:
        rule = _Rule(vs, index, spec)
        fault = FaultPolicy(spec.fault, self.rng) if spec.fault is not None else None
        retries = (RetryPolicy(spec.retries, self.rng)
                   if spec.fault is None and spec.retries is not None and spec.retries.attempts else None)
        request = HeaderEdits.of(spec.request_headers)
        response = HeaderEdits.of(spec.response_headers)
        mirror = None
        if spec.mirror is not None:
            resolve_mirror = self._resolver(spec.mirror, spec.source)
            cluster = resolve_mirror(spec.mirror.port or 80)
            empty = RequestView(b"GET", b"/", b"", b"", b"http", {})
            mirror = MirrorPolicy(lambda: cluster.pick(empty, ""), cluster.name, spec.mirror_percent, self.rng,
                                  record=cluster.outlier.record if cluster.outlier is not None else None)
        targets = []
        for rd in spec.route:
            policy = RoutePolicy(merge_edits(request, HeaderEdits.of(rd.request_headers)),
                                 merge_edits(response, HeaderEdits.of(rd.response_headers)), fault, retries,
                                 spec.source, mirror)
            targets.append(_Target(rule, policy, self._resolver(rd.destination, spec.source)))
        rule.split = WeightedChoice(targets, [rd.weight for rd in spec.route], self.rng)
        return rule

    def _resolver(self, dest: Destination, origin: str) -> Callable[[int], Cluster]:
        dr = self._dr.get(dest.host)
        policy = dr.traffic_policy if dr is not None else None
        labels: tuple[tuple[str, str], ...] = ()
        if dest.subset:
            subset = next((s for s in dr.subsets if s.name == dest.subset), None) if dr is not None else None
            if subset is None:
                raise ConfigError(f"subset {dest.subset!r} of host {dest.host!r} is not defined by any "
                                  "DestinationRule", source=origin, field="destination.subset")
            labels = subset.labels
            policy = subset.traffic_policy or policy
        se = self._se.get(dest.host)
        rng = self.rng

        def resolve(request_port: int) -> Cluster:
            port = dest.port or _service_port(se, request_port)
            hosts = _hosts(dest.host, se, port, labels)
            name = f"outbound|{port}|{dest.subset}|{dest.host}"
            limits = None
            if policy is not None and policy.pool is not None:
                limits = self.limits.get(name)
                if limits is None:
                    limits = self.limits[name] = ClusterLimits(name, policy.pool)
            outlier = None
            if policy is not None and policy.outlier is not None:
                outlier = self.outliers.get(name)
                if outlier is None:
                    outlier = self.outliers[name] = OutlierDetector(policy.outlier, hosts, self.clock)
                hosts = outlier.hosts
            return Cluster(name, hosts, policy, rng, limits=limits, outlier=outlier)
        resolve(dest.port or 80)        # fail now, not on the first request
        return resolve

    def _default_target(self, host: str) -> _Target | None:
        """A host with a ServiceEntry or DestinationRule but no VirtualService: one catch-all route to it."""
        target = self._defaults.get(host)
        if target is None and (host in self._se or host in self._dr):
            vs = VirtualService(host, "default", (host,), ())
            spec = HttpRoute("", (), ())
            rule = _Rule(vs, 0, spec)
            rule.name = host
            rule.timeout = self.fallback.timeout
            target = self._defaults[host] = _Target(rule, RoutePolicy(), self._resolver(Destination(host), host))
        return target

    def _rules_for(self, host: str) -> MatchTable[_Rule] | None:
        rules = self._exact.get(host)
        if rules is None:
            rules = next((r for suffix, r in self._wildcards if host.endswith(suffix)), None)
        return rules

    def _destination(self, authority: bytes) -> _Destination | None:
        address = split_authority(authority)
        dest = None if address is None or address in self.own else (*address, self._rules_for(address[0]))
        if len(self._by_authority) >= MAX_CACHED_AUTHORITIES:    # bounded against a flood of made-up Hosts
            self._by_authority.clear()
        self._by_authority[authority] = dest
        return dest

    # -- per request ---------------------------------------------------------------------------------------------
    def route(self, head: RequestHead, peer: str = "") -> RouteDecision | None:
        target = head.target
        if target[:1] == b"/":
            authority = head.hmap.get(b"host", b"")
            rewrite_host = False
        else:
            found = outbound_target(head, self.own)     # absolute-form: the URL's authority replaces Host
            if found is None:
                return None
            target, authority, rewrite_host, _ = found
        try:
            dest = self._by_authority[authority]
        except KeyError:    # a Host not seen yet (None is cached too: no route)
            dest = self._destination(authority)
        if dest is None:
            return None
        host, port, rules = dest
        path, _, query = target.partition(b"?")
        view = RequestView(head.method, path, query, authority, b"http", head.hmap)
        if rules is None:
            default = self._default_target(host)
            if default is None:
                return self.fallback.route(head)
            return self._decide(default, view, peer, target, authority, rewrite_host, port)
        hit = rules.first(view)
        if hit is None:
            return None
        _, rule, prefix = hit
        assert rule.split is not None
        chosen = rule.split.pick()
        if rule.rewrite_uri is not None:
            new_path = rule.rewrite_uri + path[len(prefix):] if prefix is not None else rule.rewrite_uri
            target = new_path + (b"?" + query if query else b"")
        if rule.rewrite_authority is not None:
            authority, rewrite_host = rule.rewrite_authority, True
        return self._decide(chosen, view, peer, target, authority, rewrite_host, port)

    def _decide(self, chosen: _Target, view: RequestView, peer: str, target: bytes,  # noqa: PLR0917
                authority: bytes, rewrite_host: bool, port: int) -> RouteDecision:
        cluster = chosen.cluster(port)
        host = cluster.pick(view, peer)
        if host is None:
            route = Route("", 0, cluster.name, chosen.rule.name, chosen.rule.span_path, None)
            return RouteDecision(route, target, authority, rewrite_host, chosen.policy, no_host=True)
        route = chosen.route_for(cluster, host)
        return RouteDecision(route, target, authority, rewrite_host, chosen.policy)

    def describe(self) -> dict[str, object]:
        """For /config_dump: what is in force."""
        return {
            "files": list(self.rules.files),
            "virtual_services": [{"name": vs.name, "hosts": list(vs.hosts), "source": vs.source,
                                  "http": [h.name or h.source for h in vs.http],
                                  "dispatched_on": _key_text(table)}
                                 for vs, table in zip(self.rules.virtual_services, self._tables, strict=True)],
            "destination_rules": [{"name": dr.name, "host": dr.host, "subsets": [s.name for s in dr.subsets],
                                   "source": dr.source} for dr in self.rules.destination_rules],
            "service_entries": [{"name": se.name, "hosts": list(se.hosts),
                                 "endpoints": [e.address for e in se.endpoints], "source": se.source}
                                for se in self.rules.service_entries],
            "warnings": list(self.rules.warnings),
            "circuit_breakers": {name: limits.describe() for name, limits in self.limits.items()},
            "outlier_detection": {name: od.describe() for name, od in self.outliers.items()},
        }


def _key_text(table: MatchTable[_Rule]) -> str | None:
    """For /config_dump: which request field picks the rules to try (`header x-route`, `method`), None: all."""
    if table.key is None:
        return None
    field, name = table.key
    return f"{field} {name.decode('latin-1')}" if name else field


def _service_port(se: ServiceEntry | None, request_port: int) -> int:
    if se is None or not se.ports:
        return request_port
    numbers = [p.number for p in se.ports]
    return request_port if request_port in numbers else numbers[0]


def _hosts(name: str, se: ServiceEntry | None, port: int, labels: tuple[tuple[str, str], ...]) -> list[Host]:
    if se is None or not se.endpoints:
        return [Host(name, port)]       # resolved by DNS when connecting
    port_name = next((p.name for p in se.ports if p.number == port), "")
    wanted = set(labels)
    return [Host(e.address, dict(e.ports).get(port_name, port), e.labels)
            for e in se.endpoints if wanted <= set(e.labels)]


