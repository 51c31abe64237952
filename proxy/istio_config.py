"""Istio traffic objects (VirtualService, DestinationRule, ServiceEntry) read from YAML into plain dataclasses.

A path is a file or a folder of `*.yaml`/`*.yml` files (sorted by name), each with any number of documents.
`apiVersion` must be `networking.istio.io/v1`, `v1beta1` or `v1alpha3`. Field names follow REFERENCE.md
section 5 exactly.

Unsupported fields are never silently ignored:
- a field Istio defines but meshtrace does not implement (e.g. `corsPolicy`, `gateways`, `tls`) is a *warning*:
  `RuleSet.warnings` lists it by file, line, document and field path, the sidecar logs each one at load and
  `/config_dump` shows them; the rest of the object still applies;
- a field Istio does not define (a typo such as `retries.attempt`) or a bad value is a `ConfigError` naming the
  file, line, document and field path: nothing of the file set is applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from meshtrace import ConfigError

from .config import parse_duration

__all__ = [
    "ConsistentHash", "Destination", "DestinationRule", "Endpoint", "Fault", "HeaderOps", "HttpRoute",
    "OutlierPolicy", "PoolPolicy", "Retries", "RouteDestination", "RuleSet", "ServiceEntry", "StringMatch",
    "Subset", "TrafficPolicy", "VirtualService", "load_rules", "parse_rules",
]

API_VERSIONS = frozenset({"networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"})
KINDS = ("VirtualService", "DestinationRule", "ServiceEntry")


# -- the model ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StringMatch:
    kind: str                   # "exact" | "prefix" | "regex"
    value: str


@dataclass(frozen=True, slots=True)
class RequestMatch:
    name: str = ""
    uri: StringMatch | None = None
    authority: StringMatch | None = None
    method: StringMatch | None = None
    scheme: StringMatch | None = None
    headers: tuple[tuple[str, StringMatch | None], ...] = ()          # None: the header must be present
    query_params: tuple[tuple[str, StringMatch | None], ...] = ()
    without_headers: tuple[tuple[str, StringMatch | None], ...] = ()
    ignore_uri_case: bool = False


@dataclass(frozen=True, slots=True)
class HeaderOps:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Destination:
    host: str
    subset: str = ""
    port: int | None = None


@dataclass(frozen=True, slots=True)
class RouteDestination:
    destination: Destination
    weight: int = 0
    request_headers: HeaderOps = HeaderOps()
    response_headers: HeaderOps = HeaderOps()


@dataclass(frozen=True, slots=True)
class Retries:
    attempts: int
    per_try_timeout: float | None = None
    retry_on: tuple[str, ...] = ("connect-failure", "refused-stream", "unavailable", "cancelled", "503")


@dataclass(frozen=True, slots=True)
class Fault:
    delay: float | None = None
    delay_percent: float = 0.0          # no percentage -> no fault
    abort_status: int | None = None
    abort_percent: float = 0.0


@dataclass(frozen=True, slots=True)
class HttpRoute:
    name: str
    match: tuple[RequestMatch, ...]
    route: tuple[RouteDestination, ...]
    rewrite_uri: str | None = None
    rewrite_authority: str | None = None
    request_headers: HeaderOps = HeaderOps()
    response_headers: HeaderOps = HeaderOps()
    timeout: float | None = None
    retries: Retries | None = None
    fault: Fault | None = None
    mirror: Destination | None = None
    mirror_percent: float = 100.0
    source: str = ""                    # "file:line" for /config_dump and logs


@dataclass(frozen=True, slots=True)
class VirtualService:
    name: str
    namespace: str
    hosts: tuple[str, ...]
    http: tuple[HttpRoute, ...]
    source: str = ""


@dataclass(frozen=True, slots=True)
class ConsistentHash:
    header: str | None = None
    cookie: str | None = None
    source_ip: bool = False
    query_parameter: str | None = None


@dataclass(frozen=True, slots=True)
class PoolPolicy:
    max_connections: int | None = None
    connect_timeout: float | None = None
    http1_max_pending_requests: int | None = None
    max_requests_per_connection: int | None = None
    max_retries: int | None = None
    idle_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class OutlierPolicy:
    consecutive_5xx_errors: int = 5
    consecutive_gateway_errors: int = 0
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_percent: float = 10.0
    min_health_percent: float = 0.0


@dataclass(frozen=True, slots=True)
class TrafficPolicy:
    simple: str = "ROUND_ROBIN"
    consistent_hash: ConsistentHash | None = None
    pool: PoolPolicy | None = None
    outlier: OutlierPolicy | None = None


@dataclass(frozen=True, slots=True)
class Subset:
    name: str
    labels: tuple[tuple[str, str], ...]
    traffic_policy: TrafficPolicy | None = None


@dataclass(frozen=True, slots=True)
class DestinationRule:
    name: str
    host: str
    traffic_policy: TrafficPolicy | None
    subsets: tuple[Subset, ...]
    source: str = ""


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str
    ports: tuple[tuple[str, int], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ServicePort:
    number: int
    name: str = ""
    protocol: str = ""


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    name: str
    hosts: tuple[str, ...]
    ports: tuple[ServicePort, ...]
    endpoints: tuple[Endpoint, ...]
    resolution: str = "NONE"
    location: str = "MESH_EXTERNAL"
    addresses: tuple[str, ...] = ()
    source: str = ""


@dataclass(frozen=True)
class RuleSet:
    virtual_services: tuple[VirtualService, ...] = ()
    destination_rules: tuple[DestinationRule, ...] = ()
    service_entries: tuple[ServiceEntry, ...] = ()
    warnings: tuple[str, ...] = ()
    files: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.virtual_services or self.destination_rules or self.service_entries)


# -- reading nodes --------------------------------------------------------------------------------------------------
_CONSTRUCTOR = yaml.SafeLoader("")


@dataclass
class _Doc:
    source: str
    index: int                          # 1-based document number within the file
    kind: str = ""
    name: str = ""
    warnings: list[str] = field(default_factory=list)

    def error(self, node: yaml.Node, path: str, message: str) -> ConfigError:
        label = f"document {self.index}" + (f" ({self.kind} {self.name})" if self.name else "")
        return ConfigError(f"{label}: {message}", source=self.source, line=node.start_mark.line + 1, field=path)

    def warn(self, node: yaml.Node, path: str, message: str) -> None:
        label = f"document {self.index}" + (f" ({self.kind} {self.name})" if self.name else "")
        self.warnings.append(f"{self.source}, line {node.start_mark.line + 1}, field {path!r}: {label}: {message}")

    # typed readers --------------------------------------------------------------------------------------------
    def mapping(self, node: yaml.Node, path: str, supported: frozenset[str],
                unsupported: frozenset[str] = frozenset()) -> dict[str, tuple[yaml.Node, str]]:
        """Key -> (value node, field path). Istio fields meshtrace lacks warn; names Istio lacks are errors."""
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, path, "must be a mapping")
        out: dict[str, tuple[yaml.Node, str]] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            sub = f"{path}.{key}" if path else str(key)
            if key in supported:
                if key in out:
                    raise self.error(key_node, sub, "set twice")
                out[key] = (value_node, sub)
            elif key in unsupported:
                self.warn(key_node, sub, "not supported by meshtrace, ignored")
            else:
                known = ", ".join(sorted(supported | unsupported))
                raise self.error(key_node, sub, f"unknown field (known: {known})")
        return out

    def sequence(self, node: yaml.Node, path: str) -> list[tuple[yaml.Node, str]]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, path, "must be a list")
        return [(item, f"{path}[{i}]") for i, item in enumerate(node.value)]

    def scalar(self, node: yaml.Node, path: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, path, "must be a single value")
        return _CONSTRUCTOR.construct_object(node)

    def text(self, node: yaml.Node, path: str) -> str:
        value = self.scalar(node, path)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.error(node, path, f"{value!r} is not text")
        return str(value)

    def integer(self, node: yaml.Node, path: str, low: int = 0, high: int | None = None) -> int:
        value = self.scalar(node, path)
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            bound = f"{low}..{high}" if high is not None else f">= {low}"
            raise self.error(node, path, f"{value!r} is not an integer {bound}")
        return value

    def boolean(self, node: yaml.Node, path: str) -> bool:
        value = self.scalar(node, path)
        if not isinstance(value, bool):
            raise self.error(node, path, f"{value!r} is not true or false")
        return value

    def duration(self, node: yaml.Node, path: str) -> float:
        try:
            return parse_duration(self.scalar(node, path))
        except ValueError as exc:
            raise self.error(node, path, str(exc)) from None

    def percent(self, node: yaml.Node, path: str) -> float:
        fields_ = self.mapping(node, path, frozenset({"value"}))
        if "value" not in fields_:
            raise self.error(node, path, "needs `value`")
        value_node, sub = fields_["value"]
        value = self.scalar(value_node, sub)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 100.0:
            raise self.error(value_node, sub, f"{value!r} is not a percentage between 0 and 100")
        return float(value)

    def string_map(self, node: yaml.Node, path: str) -> tuple[tuple[str, str], ...]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, path, "must be a mapping of names to values")
        return tuple((self.text(k, path), self.text(v, f"{path}.{k.value}")) for k, v in node.value)

    def text_list(self, node: yaml.Node, path: str) -> tuple[str, ...]:
        return tuple(self.text(item, sub) for item, sub in self.sequence(node, path))


def _origin(doc: _Doc, node: yaml.Node) -> str:
    return f"{doc.source}:{node.start_mark.line + 1}"


# -- VirtualService -------------------------------------------------------------------------------------------------
_STRING_MATCH = frozenset({"exact", "prefix", "regex"})


def _string_match(doc: _Doc, node: yaml.Node, path: str, *, lower: bool = False) -> StringMatch:
    fields_ = doc.mapping(node, path, _STRING_MATCH)
    if len(fields_) != 1:
        raise doc.error(node, path, "needs exactly one of exact, prefix, regex")
    (kind, (value_node, sub)), = fields_.items()
    value = doc.text(value_node, sub)
    if kind == "regex":
        import re

        try:
            re.compile(value)
        except re.error as exc:
            raise doc.error(value_node, sub, f"not a valid regular expression: {exc}") from None
    return StringMatch(kind, value.lower() if lower and kind != "regex" else value)


def _match_map(doc: _Doc, node: yaml.Node, path: str, *,
               lower_names: bool) -> tuple[tuple[str, StringMatch | None], ...]:
    if not isinstance(node, yaml.MappingNode):
        raise doc.error(node, path, "must be a mapping of names to {exact|prefix|regex}")
    out = []
    for key_node, value_node in node.value:
        name = doc.text(key_node, path)
        sub = f"{path}.{name}"
        if lower_names and name != name.lower():
            raise doc.error(key_node, sub, "header names must be lowercase")
        empty = isinstance(value_node, yaml.MappingNode) and not value_node.value
        out.append((name, None if empty else _string_match(doc, value_node, sub)))
    return tuple(out)


_MATCH_FIELDS = frozenset({"name", "uri", "authority", "method", "scheme", "headers", "queryParams",
                           "withoutHeaders", "ignoreUriCase"})
_MATCH_UNSUPPORTED = frozenset({"port", "sourceLabels", "gateways", "sourceNamespace", "statPrefix"})


def _request_match(doc: _Doc, node: yaml.Node, path: str) -> RequestMatch:
    f = doc.mapping(node, path, _MATCH_FIELDS, _MATCH_UNSUPPORTED)
    kw: dict[str, Any] = {}
    if "name" in f:
        kw["name"] = doc.text(*f["name"])
    for key in ("uri", "authority", "method", "scheme"):
        if key in f:
            kw[key] = _string_match(doc, *f[key])
    if "headers" in f:
        kw["headers"] = _match_map(doc, *f["headers"], lower_names=True)
    if "withoutHeaders" in f:
        kw["without_headers"] = _match_map(doc, *f["withoutHeaders"], lower_names=True)
    if "queryParams" in f:
        kw["query_params"] = _match_map(doc, *f["queryParams"], lower_names=False)
    if "ignoreUriCase" in f:
        kw["ignore_uri_case"] = doc.boolean(*f["ignoreUriCase"])
    return RequestMatch(**kw)


def _header_ops(doc: _Doc, node: yaml.Node, path: str) -> HeaderOps:
    f = doc.mapping(node, path, frozenset({"set", "add", "remove"}))
    return HeaderOps(
        set=tuple((k.lower(), v) for k, v in doc.string_map(*f["set"])) if "set" in f else (),
        add=tuple((k.lower(), v) for k, v in doc.string_map(*f["add"])) if "add" in f else (),
        remove=tuple(h.lower() for h in doc.text_list(*f["remove"])) if "remove" in f else (),
    )


def _headers(doc: _Doc, node: yaml.Node, path: str) -> tuple[HeaderOps, HeaderOps]:
    f = doc.mapping(node, path, frozenset({"request", "response"}))
    request = _header_ops(doc, *f["request"]) if "request" in f else HeaderOps()
    response = _header_ops(doc, *f["response"]) if "response" in f else HeaderOps()
    return request, response


def _destination(doc: _Doc, node: yaml.Node, path: str) -> Destination:
    f = doc.mapping(node, path, frozenset({"host", "subset", "port"}))
    if "host" not in f:
        raise doc.error(node, path, "needs `host`")
    port = None
    if "port" in f:
        pf = doc.mapping(*f["port"], frozenset({"number"}))
        if "number" not in pf:
            raise doc.error(f["port"][0], f["port"][1], "needs `number`")
        port = doc.integer(*pf["number"], low=1, high=65535)
    return Destination(doc.text(*f["host"]).lower(), doc.text(*f["subset"]) if "subset" in f else "", port)


def _route_destination(doc: _Doc, node: yaml.Node, path: str) -> RouteDestination:
    f = doc.mapping(node, path, frozenset({"destination", "weight", "headers"}))
    if "destination" not in f:
        raise doc.error(node, path, "needs `destination`")
    request, response = _headers(doc, *f["headers"]) if "headers" in f else (HeaderOps(), HeaderOps())
    weight = doc.integer(*f["weight"], low=0) if "weight" in f else 0
    return RouteDestination(_destination(doc, *f["destination"]), weight, request, response)


_RETRY_ON = frozenset({"5xx", "gateway-error", "reset", "connect-failure", "retriable-4xx", "refused-stream",
                       "retriable-status-codes", "unavailable", "cancelled", "deadline-exceeded",
                       "resource-exhausted", "internal"})


def _retries(doc: _Doc, node: yaml.Node, path: str) -> Retries:
    f = doc.mapping(node, path, frozenset({"attempts", "perTryTimeout", "retryOn"}),
                    frozenset({"retryRemoteLocalities", "retryIgnorePreviousHosts", "backoff"}))
    attempts = doc.integer(*f["attempts"], low=0) if "attempts" in f else 2
    per_try = doc.duration(*f["perTryTimeout"]) if "perTryTimeout" in f else None
    retry_on = Retries(0).retry_on
    if "retryOn" in f:
        value_node, sub = f["retryOn"]
        items = [item.strip() for item in doc.text(value_node, sub).split(",") if item.strip()]
        for item in items:
            if item not in _RETRY_ON and not (item.isdigit() and 100 <= int(item) <= 599):
                raise doc.error(value_node, sub, f"{item!r} is not a retry condition "
                                f"(one of {', '.join(sorted(_RETRY_ON))} or a status code)")
        retry_on = tuple(items)
    return Retries(attempts, per_try or None, retry_on)


def _fault(doc: _Doc, node: yaml.Node, path: str) -> Fault:
    f = doc.mapping(node, path, frozenset({"delay", "abort"}))
    kw: dict[str, Any] = {}
    if "delay" in f:
        d = doc.mapping(*f["delay"], frozenset({"fixedDelay", "percentage"}),
                        frozenset({"percent", "exponentialDelay"}))
        if "fixedDelay" not in d:
            raise doc.error(f["delay"][0], f["delay"][1], "needs `fixedDelay`")
        kw["delay"] = doc.duration(*d["fixedDelay"])
        kw["delay_percent"] = doc.percent(*d["percentage"]) if "percentage" in d else 0.0
    if "abort" in f:
        a = doc.mapping(*f["abort"], frozenset({"httpStatus", "percentage"}), frozenset({"grpcStatus", "http2Error"}))
        if "httpStatus" not in a:
            raise doc.error(f["abort"][0], f["abort"][1], "needs `httpStatus`")
        kw["abort_status"] = doc.integer(*a["httpStatus"], low=200, high=599)
        kw["abort_percent"] = doc.percent(*a["percentage"]) if "percentage" in a else 0.0
    return Fault(**kw)


_HTTP_FIELDS = frozenset({"name", "match", "route", "rewrite", "headers", "timeout", "retries", "fault", "mirror",
                          "mirrorPercentage"})
_HTTP_UNSUPPORTED = frozenset({"redirect", "directResponse", "delegate", "corsPolicy", "mirrors", "mirrorPercent",
                               "mirror_percent"})


def _http_route(doc: _Doc, node: yaml.Node, path: str) -> HttpRoute:
    f = doc.mapping(node, path, _HTTP_FIELDS, _HTTP_UNSUPPORTED)
    if "route" not in f:
        raise doc.error(node, path, "needs `route` (redirect, directResponse and delegate are not supported)")
    routes = tuple(_route_destination(doc, *item) for item in doc.sequence(*f["route"]))
    if not routes:
        raise doc.error(f["route"][0], f["route"][1], "needs at least one destination")
    if len(routes) > 1 and sum(r.weight for r in routes) == 0:
        raise doc.error(f["route"][0], f["route"][1], "weights of several destinations must not all be 0")
    kw: dict[str, Any] = {"name": doc.text(*f["name"]) if "name" in f else "", "route": routes,
                          "source": _origin(doc, node)}
    kw["match"] = tuple(_request_match(doc, *item) for item in doc.sequence(*f["match"])) if "match" in f else ()
    if "rewrite" in f:
        r = doc.mapping(*f["rewrite"], frozenset({"uri", "authority"}), frozenset({"uriRegexRewrite"}))
        kw["rewrite_uri"] = doc.text(*r["uri"]) if "uri" in r else None
        kw["rewrite_authority"] = doc.text(*r["authority"]) if "authority" in r else None
    if "headers" in f:
        kw["request_headers"], kw["response_headers"] = _headers(doc, *f["headers"])
    if "timeout" in f:
        kw["timeout"] = doc.duration(*f["timeout"]) or None
    if "retries" in f:
        kw["retries"] = _retries(doc, *f["retries"])
    if "fault" in f:
        kw["fault"] = _fault(doc, *f["fault"])
    if "mirror" in f:
        kw["mirror"] = _destination(doc, *f["mirror"])
    if "mirrorPercentage" in f:
        kw["mirror_percent"] = doc.percent(*f["mirrorPercentage"])
    return HttpRoute(**kw)


def _virtual_service(doc: _Doc, spec: yaml.Node, name: str, namespace: str, origin: str) -> VirtualService:
    f = doc.mapping(spec, "spec", frozenset({"hosts", "http"}), frozenset({"gateways", "tls", "tcp", "exportTo"}))
    if "hosts" not in f:
        raise doc.error(spec, "spec", "needs `hosts`")
    hosts = tuple(h.lower() for h in doc.text_list(*f["hosts"]))
    http = tuple(_http_route(doc, *item) for item in doc.sequence(*f["http"])) if "http" in f else ()
    return VirtualService(name, namespace, hosts, http, origin)


# -- DestinationRule ------------------------------------------------------------------------------------------------
_SIMPLE = frozenset({"ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "PASSTHROUGH", "LEAST_CONN", "UNSPECIFIED"})


def _traffic_policy(doc: _Doc, node: yaml.Node, path: str) -> TrafficPolicy:
    f = doc.mapping(node, path, frozenset({"loadBalancer", "connectionPool", "outlierDetection"}),
                    frozenset({"tls", "portLevelSettings", "tunnel", "proxyProtocol"}))
    kw: dict[str, Any] = {}
    if "loadBalancer" in f:
        lb = doc.mapping(*f["loadBalancer"], frozenset({"simple", "consistentHash"}),
                         frozenset({"localityLbSetting", "warmupDurationSecs", "warmup"}))
        if "simple" in lb:
            simple = doc.text(*lb["simple"])
            if simple not in _SIMPLE:
                raise doc.error(lb["simple"][0], lb["simple"][1],
                                f"{simple!r} is not one of {', '.join(sorted(_SIMPLE))}")
            kw["simple"] = {"LEAST_CONN": "LEAST_REQUEST", "UNSPECIFIED": "ROUND_ROBIN"}.get(simple, simple)
        if "consistentHash" in lb:
            ch = doc.mapping(*lb["consistentHash"],
                             frozenset({"httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName"}),
                             frozenset({"ringHash", "maglev", "minimumRingSize"}))
            if len(ch) != 1:
                raise doc.error(lb["consistentHash"][0], lb["consistentHash"][1], "needs exactly one hash key")
            chk: dict[str, Any] = {}
            if "httpHeaderName" in ch:
                chk["header"] = doc.text(*ch["httpHeaderName"]).lower()
            if "httpCookie" in ch:
                cookie = doc.mapping(*ch["httpCookie"], frozenset({"name", "ttl", "path"}))
                if "name" not in cookie:
                    raise doc.error(ch["httpCookie"][0], ch["httpCookie"][1], "needs `name`")
                chk["cookie"] = doc.text(*cookie["name"])
            if "useSourceIp" in ch:
                chk["source_ip"] = doc.boolean(*ch["useSourceIp"])
            if "httpQueryParameterName" in ch:
                chk["query_parameter"] = doc.text(*ch["httpQueryParameterName"])
            kw["consistent_hash"] = ConsistentHash(**chk)
    if "connectionPool" in f:
        cp = doc.mapping(*f["connectionPool"], frozenset({"tcp", "http"}))
        pk: dict[str, Any] = {}
        if "tcp" in cp:
            tcp = doc.mapping(*cp["tcp"], frozenset({"maxConnections", "connectTimeout"}),
                              frozenset({"tcpKeepalive", "maxConnectionDuration", "idleTimeout"}))
            if "maxConnections" in tcp:
                pk["max_connections"] = doc.integer(*tcp["maxConnections"], low=1)
            if "connectTimeout" in tcp:
                pk["connect_timeout"] = doc.duration(*tcp["connectTimeout"])
        if "http" in cp:
            http = doc.mapping(*cp["http"], frozenset({"http1MaxPendingRequests", "maxRequestsPerConnection",
                                                       "maxRetries", "idleTimeout"}),
                               frozenset({"http2MaxRequests", "h2UpgradePolicy", "useClientProtocol",
                                          "maxConcurrentStreams"}))
            for yaml_key, key in (("http1MaxPendingRequests", "http1_max_pending_requests"),
                                  ("maxRequestsPerConnection", "max_requests_per_connection"),
                                  ("maxRetries", "max_retries")):
                if yaml_key in http:
                    pk[key] = doc.integer(*http[yaml_key], low=0)
            if "idleTimeout" in http:
                pk["idle_timeout"] = doc.duration(*http["idleTimeout"])
        kw["pool"] = PoolPolicy(**pk)
    if "outlierDetection" in f:
        od = doc.mapping(*f["outlierDetection"],
                         frozenset({"consecutive5xxErrors", "consecutiveGatewayErrors", "interval", "baseEjectionTime",
                                    "maxEjectionPercent", "minHealthPercent"}),
                         frozenset({"consecutiveErrors", "splitExternalLocalOriginErrors",
                                    "consecutiveLocalOriginFailures"}))
        ok: dict[str, Any] = {}
        if "consecutive5xxErrors" in od:
            ok["consecutive_5xx_errors"] = doc.integer(*od["consecutive5xxErrors"], low=0)
        if "consecutiveGatewayErrors" in od:
            ok["consecutive_gateway_errors"] = doc.integer(*od["consecutiveGatewayErrors"], low=0)
        for yaml_key, key in (("interval", "interval"), ("baseEjectionTime", "base_ejection_time")):
            if yaml_key in od:
                ok[key] = doc.duration(*od[yaml_key])
        for yaml_key, key in (("maxEjectionPercent", "max_ejection_percent"),
                              ("minHealthPercent", "min_health_percent")):
            if yaml_key in od:
                ok[key] = float(doc.integer(*od[yaml_key], low=0, high=100))
        kw["outlier"] = OutlierPolicy(**ok)
    return TrafficPolicy(**kw)


def _destination_rule(doc: _Doc, spec: yaml.Node, name: str, origin: str) -> DestinationRule:
    f = doc.mapping(spec, "spec", frozenset({"host", "trafficPolicy", "subsets"}),
                    frozenset({"exportTo", "workloadSelector"}))
    if "host" not in f:
        raise doc.error(spec, "spec", "needs `host`")
    policy = _traffic_policy(doc, *f["trafficPolicy"]) if "trafficPolicy" in f else None
    subsets = []
    for item, sub in doc.sequence(*f["subsets"]) if "subsets" in f else []:
        s = doc.mapping(item, sub, frozenset({"name", "labels", "trafficPolicy"}))
        if "name" not in s:
            raise doc.error(item, sub, "needs `name`")
        subsets.append(Subset(doc.text(*s["name"]), doc.string_map(*s["labels"]) if "labels" in s else (),
                              _traffic_policy(doc, *s["trafficPolicy"]) if "trafficPolicy" in s else None))
    return DestinationRule(name, doc.text(*f["host"]).lower(), policy, tuple(subsets), origin)


# -- ServiceEntry ---------------------------------------------------------------------------------------------------
def _service_entry(doc: _Doc, spec: yaml.Node, name: str, origin: str) -> ServiceEntry:
    f = doc.mapping(spec, "spec", frozenset({"hosts", "addresses", "ports", "location", "resolution", "endpoints"}),
                    frozenset({"exportTo", "workloadSelector", "subjectAltNames"}))
    if "hosts" not in f:
        raise doc.error(spec, "spec", "needs `hosts`")
    ports = []
    for item, sub in doc.sequence(*f["ports"]) if "ports" in f else []:
        p = doc.mapping(item, sub, frozenset({"number", "protocol", "name"}), frozenset({"targetPort"}))
        if "number" not in p:
            raise doc.error(item, sub, "needs `number`")
        ports.append(ServicePort(doc.integer(*p["number"], low=1, high=65535),
                                 doc.text(*p["name"]) if "name" in p else "",
                                 doc.text(*p["protocol"]) if "protocol" in p else ""))
    endpoints = []
    for item, sub in doc.sequence(*f["endpoints"]) if "endpoints" in f else []:
        e = doc.mapping(item, sub, frozenset({"address", "ports", "labels"}),
                        frozenset({"network", "locality", "weight", "serviceAccount"}))
        if "address" not in e:
            raise doc.error(item, sub, "needs `address`")
        eports: tuple[tuple[str, int], ...] = ()
        if "ports" in e:
            node, psub = e["ports"]
            if not isinstance(node, yaml.MappingNode):
                raise doc.error(node, psub, "must map port names to numbers")
            eports = tuple((doc.text(k, psub), doc.integer(v, f"{psub}.{k.value}", low=1, high=65535))
                           for k, v in node.value)
        endpoints.append(Endpoint(doc.text(*e["address"]), eports,
                                  doc.string_map(*e["labels"]) if "labels" in e else ()))
    resolution = doc.text(*f["resolution"]) if "resolution" in f else "NONE"
    if resolution not in {"NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"}:
        raise doc.error(f["resolution"][0], "spec.resolution",
                        f"{resolution!r} is not NONE, STATIC, DNS or DNS_ROUND_ROBIN")
    return ServiceEntry(
        name, tuple(h.lower() for h in doc.text_list(*f["hosts"])), tuple(ports), tuple(endpoints), resolution,
        doc.text(*f["location"]) if "location" in f else "MESH_EXTERNAL",
        doc.text_list(*f["addresses"]) if "addresses" in f else (), origin)


# -- files ----------------------------------------------------------------------------------------------------------
def parse_rules(text: str, source: str = "<rules>") -> RuleSet:
    """Every document of one YAML text; ConfigError on the first problem."""
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"not valid YAML: {problem}", source=source,
                          line=mark.line + 1 if mark is not None else None) from exc
    vss: list[VirtualService] = []
    drs: list[DestinationRule] = []
    ses: list[ServiceEntry] = []
    warnings: list[str] = []
    for index, root in enumerate(nodes, start=1):
        if root is None or (isinstance(root, yaml.ScalarNode) and root.value == ""):
            continue                                # an empty document (`---` at the end)
        doc = _Doc(source, index)
        f = doc.mapping(root, "", frozenset({"apiVersion", "kind", "metadata", "spec"}), frozenset({"status"}))
        for required in ("apiVersion", "kind", "spec"):
            if required not in f:
                raise doc.error(root, required, f"needs `{required}`")
        api = doc.text(*f["apiVersion"])
        if api not in API_VERSIONS:
            raise doc.error(f["apiVersion"][0], "apiVersion",
                            f"{api!r} is not one of {', '.join(sorted(API_VERSIONS))}")
        kind = doc.text(*f["kind"])
        if kind not in KINDS:
            raise doc.error(f["kind"][0], "kind", f"{kind!r} is not supported (supported: {', '.join(KINDS)})")
        doc.kind = kind
        name, namespace = "", "default"
        if "metadata" in f:
            meta_node, _ = f["metadata"]
            if not isinstance(meta_node, yaml.MappingNode):
                raise doc.error(meta_node, "metadata", "must be a mapping")
            for key_node, value_node in meta_node.value:
                if key_node.value == "name":
                    name = doc.text(value_node, "metadata.name")
                elif key_node.value == "namespace":
                    namespace = doc.text(value_node, "metadata.namespace")
        doc.name = name
        spec, _ = f["spec"]
        origin = _origin(doc, root)
        if kind == "VirtualService":
            vss.append(_virtual_service(doc, spec, name, namespace, origin))
        elif kind == "DestinationRule":
            drs.append(_destination_rule(doc, spec, name, origin))
        else:
            ses.append(_service_entry(doc, spec, name, origin))
        warnings += doc.warnings
    return RuleSet(tuple(vss), tuple(drs), tuple(ses), tuple(warnings), (source,))


def rule_files(path: str | Path) -> list[Path]:
    """The YAML files a rules path names: the file itself, or a folder's *.yaml/*.yml sorted by name."""
    p = Path(path)
    if p.is_dir():
        return sorted(q for q in p.iterdir() if q.suffix in {".yaml", ".yml"} and q.is_file())
    return [p]


def load_rules(path: str | Path) -> RuleSet:
    """All rules under `path` merged (file order, then document order); ConfigError names the bad file."""
    parts: list[RuleSet] = []
    for file in rule_files(path):
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the rules file: {exc.strerror}", source=str(file)) from exc
        parts.append(parse_rules(text, str(file)))
    return RuleSet(
        tuple(vs for part in parts for vs in part.virtual_services),
        tuple(dr for part in parts for dr in part.destination_rules),
        tuple(se for part in parts for se in part.service_entries),
        tuple(w for part in parts for w in part.warnings),
        tuple(str(f) for f in rule_files(path)),
    )
