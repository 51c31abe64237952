"""Istio standard metrics (istio_requests_total & co.) kept in memory and rendered as Prometheus text.

Theory of operation: every finished hop is reduced to a key tuple of the values that decide its labels
(direction, source and destination `Workload`, status, response flags, gRPC status). The first hop with a
new key builds a series object holding the pre-escaped label string and zeroed bucket arrays; every later hop
costs one dict lookup (keyed by the Workload objects' ids, so no dataclass hash runs), a `bisect` for the
duration, one remembered pair of byte buckets and a few integer additions. Label strings, cumulative buckets and the
exposition text are produced only when `/metrics` is scraped.

Label values follow Istio's stats filter (istio/proxy `istio_stats.cc`): `reporter` is `destination` on the
inbound side and `source` on the outbound side; `connection_security_policy` is `none` on the destination
side (plain text: this proxy never terminates mTLS) and `unknown` on the source side, where Istio cannot tell;
`response_code` is `0` when no response was sent; `grpc_response_status` is "" for non-gRPC requests.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, cast

from .hop import UNKNOWN, Direction, Hop, Workload

__all__ = [
    "BYTE_BUCKETS",
    "DURATION_BUCKETS_MS",
    "HTTP_LABELS",
    "MIXER_BYTE_BUCKETS",
    "TCP_LABELS",
    "IstioMetrics",
    "escape_label_value",
    "format_float",
]

# Envoy's default histogram buckets, which Istio (1.5+, stats in the proxy) uses for every histogram.
DURATION_BUCKETS_MS: Final[tuple[float, ...]] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
    300000, 600000, 1800000, 3600000,
)
# Istio 1.5+ records istio_request_bytes/istio_response_bytes as plain Envoy histograms, so a stock sidecar
# exports them with the same default buckets (unless `sidecar.istio.io/statsHistogramBuckets` overrides them).
BYTE_BUCKETS: Final[tuple[float, ...]] = DURATION_BUCKETS_MS
# The Mixer-era (Istio <= 1.4) byte buckets: exponential, scale 1, growth factor 10, 8 finite buckets.
# Offered for users whose dashboards were tuned for them: IstioMetrics(byte_buckets=MIXER_BYTE_BUCKETS).
MIXER_BYTE_BUCKETS: Final[tuple[float, ...]] = tuple(float(10**i) for i in range(9))

HTTP_LABELS: Final[tuple[str, ...]] = (
    "reporter",
    "source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version",
    "source_canonical_service",
    "destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
    "destination_version", "destination_service", "destination_service_name", "destination_service_namespace",
    "destination_canonical_service",
    "request_protocol", "response_code", "grpc_response_status", "response_flags", "connection_security_policy",
)
TCP_LABELS: Final[tuple[str, ...]] = tuple(
    name for name in HTTP_LABELS if name not in ("response_code", "grpc_response_status"))

_UNKNOWN = "unknown"
# A client can put anything in the peer-metadata header, so identities are attacker-controlled: past this many
# series a new identity is folded into `unknown` (totals stay right, only the identity labels are lost).
DEFAULT_MAX_SERIES = 5000
_MAX_IDENTITY_KEYS = 4096

# Response flag -> the Envoy-style /stats counter it increments (a comma-joined flag string counts each flag).
_FLAG_STATS: Final[dict[str, str]] = {
    "UH": "upstream_cx_none_healthy",
    "UF": "upstream_cx_connect_fail",
    "UO": "upstream_rq_pending_overflow",
    "NR": "no_route",
    "URX": "upstream_rq_retry_limit_exceeded",
    "UT": "upstream_rq_timeout",
    "UC": "upstream_cx_destroy_remote_with_active_rq",
    "UR": "upstream_rq_rx_reset",
    "LR": "downstream_rq_local_reset",
    "DC": "downstream_cx_destroy_remote_active_rq",
    "DI": "fault_delays_injected",
    "FI": "fault_aborts_injected",
    "DPE": "downstream_rq_protocol_error",
    "UPE": "upstream_rq_protocol_error",
}


def escape_label_value(value: str) -> str:
    """Escape a label value for the text format: backslash, double quote and line feed."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_float(value: float) -> str:
    """Format a number as Go's strconv.FormatFloat(v, 'g', -1, 64) does, like Envoy and client_golang.

    So `le` reads "1", "0.5", "600000", "1.8e+06" exactly as on a real Istio sidecar.
    """
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if value == 0:
        return "0"
    # repr gives the shortest round-tripping digits; normalize() drops trailing zeros.
    sign, digit_tuple, exponent = Decimal(repr(float(value))).normalize().as_tuple()
    assert isinstance(exponent, int)  # finite by the checks above
    digits = "".join(map(str, digit_tuple))
    exp10 = len(digits) - 1 + exponent             # decimal exponent of the leading digit
    prefix = "-" if sign else ""
    if exp10 < -4 or exp10 >= 6:                   # Go's switch to %e for the shortest 'g' form
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    if exp10 < 0:
        return f"{prefix}0.{'0' * (-exp10 - 1)}{digits}"
    if len(digits) <= exp10 + 1:
        return f"{prefix}{digits}{'0' * (exp10 + 1 - len(digits))}"
    return f"{prefix}{digits[:exp10 + 1]}.{digits[exp10 + 1:]}"


def _fmt_number(value: float) -> str:
    return str(value) if isinstance(value, int) else format_float(value)


@dataclass(frozen=True, slots=True)
class _Histogram:
    name: str
    help: str
    bounds: tuple[float, ...]
    le: tuple[str, ...]                            # pre-formatted bounds, "+Inf" last


def _histogram(name: str, help_text: str, bounds: Sequence[float]) -> _Histogram:
    ordered = tuple(float(b) for b in bounds)
    if list(ordered) != sorted(set(ordered)) or not all(math.isfinite(b) for b in ordered):
        raise ValueError(f"{name}: buckets must be finite and strictly increasing, got {bounds!r}")
    return _Histogram(name, help_text, ordered, (*(format_float(b) for b in ordered), "+Inf"))


class _HttpSeries:
    """Counters of one HTTP label set; bucket arrays hold per-bucket (not cumulative) counts, +Inf last."""

    __slots__ = ("duration", "duration_sum", "flags", "labels", "request_bytes", "request_bytes_sum",
                 "requests", "response_bytes", "response_bytes_sum", "status")

    def __init__(self, labels: str, status: int, flags: str, duration_slots: int, bytes_slots: int) -> None:
        self.labels = labels
        self.status = status
        self.flags = flags
        self.requests = 0
        self.duration = [0] * duration_slots
        self.duration_sum = 0.0
        self.request_bytes = [0] * bytes_slots
        self.request_bytes_sum = 0
        self.response_bytes = [0] * bytes_slots
        self.response_bytes_sum = 0


class _TcpSeries:
    """Counters of one TCP label set; doubles as the handle `tcp.py` keeps for a live connection."""

    __slots__ = ("closed", "flags", "labels", "opened", "received", "sent")

    def __init__(self, labels: str, flags: str) -> None:
        self.labels = labels
        self.flags = flags
        self.opened = 0
        self.closed = 0
        self.received = 0
        self.sent = 0

    def add_bytes(self, received: int, sent: int) -> None:
        self.received += received
        self.sent += sent

    def close(self) -> None:
        self.closed += 1


def _service_parts(dst: Workload) -> tuple[str, str]:
    """destination_service_name and _namespace from a host like reviews.default.svc.cluster.local."""
    if dst.service == _UNKNOWN:
        return _UNKNOWN, dst.namespace
    parts = dst.service.split(".")
    if len(parts) == 2 or (len(parts) >= 3 and parts[2] == "svc"):
        return parts[0], parts[1]
    return parts[0], dst.namespace


def _canonical(w: Workload) -> str:
    # Istio falls back from the canonical-name label to the app label.
    return w.canonical_service if w.canonical_service != _UNKNOWN else w.app


def _identity_values(direction: Direction, src: Workload, dst: Workload) -> list[str]:
    name, namespace = _service_parts(dst)
    return [
        "destination" if direction == "inbound" else "source",
        src.workload, src.namespace, src.principal, src.app, src.version, _canonical(src),
        dst.workload, dst.namespace, dst.principal, dst.app, dst.version, dst.service, name, namespace,
        _canonical(dst),
    ]


def _join_labels(names: Iterable[str], values: Iterable[str]) -> str:
    return ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True))


class IstioMetrics:
    """The Istio standard metrics as a `HopObserver` (HTTP) and TCP observer, with Prometheus text output."""

    def __init__(self, *, duration_buckets: Sequence[float] = DURATION_BUCKETS_MS,
                 byte_buckets: Sequence[float] = BYTE_BUCKETS, max_series: int = DEFAULT_MAX_SERIES) -> None:
        self._duration = _histogram(
            "istio_request_duration_milliseconds", "Duration of requests in milliseconds.", duration_buckets)
        self._request_bytes = _histogram("istio_request_bytes", "Sizes of HTTP request bodies.", byte_buckets)
        self._response_bytes = _histogram("istio_response_bytes", "Sizes of HTTP response bodies.", byte_buckets)
        self._duration_bounds = self._duration.bounds
        self._bytes_bounds = self._request_bytes.bounds
        self._http: dict[tuple[object, ...], _HttpSeries] = {}
        # (direction, id(source), id(destination), status, flags, grpc) -> (source, destination, series)
        self._by_identity: dict[tuple[object, ...], tuple[Workload, Workload, _HttpSeries]] = {}
        self._byte_slots: dict[tuple[int, int], tuple[int, int]] = {}  # (request, response) size -> their buckets
        self._tcp: dict[tuple[object, ...], _TcpSeries] = {}
        # (direction, source, destination, status, flags, grpc, series) of the last request counted; the
        # placeholder's fresh object never matches a source.
        self._last: tuple[Any, ...] = ("", object(), None, -1, "", None, None)
        self._last_hits = 0     # requests counted through `_last` (a test proves the shortcut is taken)
        self._max_series = max_series
        self._overflow = 0
        self._errors = 0

    # -- recording (hot path) ------------------------------------------------------------------------------

    def on_hop(self, hop: Hop) -> None:
        """Count one finished HTTP hop. TCP hops are ignored here: they are counted through `on_tcp_open`."""
        if hop.protocol == "tcp":
            return
        self.count_http(hop.direction, hop.source, hop.destination, hop.status, hop.response_flags, hop.duration_ms,
                        hop.request_bytes, hop.response_bytes, hop.grpc_status)

    # By position, no keywords: the exchange calls this once per request with the values it would put in a Hop
    # (the sidecar then makes no Hop at all when nothing else reads one).
    def count_http(self, direction: Direction, src: Workload, dst: Workload, status: int,  # noqa: PLR0917
                   flags: str, duration_ms: float, request_bytes: int, response_bytes: int,
                   grpc_status: object = None) -> None:
        """Count one finished HTTP request: what `on_hop` counts for a Hop with these fields."""
        try:
            last = self._last
            series: _HttpSeries     # not Any (as `last[6]` is): the counter updates below are native slot writes
            if (last[1] is src and last[2] is dst and last[3] == status and last[4] == flags
                    and last[0] == direction and last[5] == grpc_status):
                # The previous request's series again (a run of 200s from the same caller): no key to build.
                series = last[6]
                self._last_hits += 1
            else:
                series = self._series(direction, src, dst, status, flags, grpc_status)
            series.requests += 1
            series.duration[bisect_left(self._duration_bounds, duration_ms)] += 1
            series.duration_sum += duration_ms
            # Body sizes repeat (0 for every GET, the same few response sizes): the buckets of a pair of sizes are
            # remembered, one look-up for both.
            sizes = (request_bytes, response_bytes)
            slots = self._byte_slots.get(sizes)
            if slots is None:
                slots = self._byte_slot_pair(sizes)
            series.request_bytes[slots[0]] += 1
            series.request_bytes_sum += request_bytes
            series.response_bytes[slots[1]] += 1
            series.response_bytes_sum += response_bytes
        except Exception:
            self._errors += 1  # telemetry never breaks a request

    def _series(self, direction: Direction, src: Workload, dst: Workload, status: int, flags: str,  # noqa: PLR0917
                grpc_status: object) -> _HttpSeries:
        # Workload is a frozen dataclass whose hash is Python code: look the series up by the identities'
        # object ids first (a sidecar hands over the same few Workload objects again and again), and by
        # value only for objects not seen yet. The entry keeps both objects, so an id cannot be reused.
        fast_key = (direction, id(src), id(dst), status, flags, grpc_status)
        entry = self._by_identity.get(fast_key)
        if entry is not None and entry[0] is src and entry[1] is dst:
            series = entry[2]
        else:
            key = (direction, src, dst, status, flags, grpc_status)
            known = self._http.get(key)
            series = known if known is not None else self._new_http_series(key, grpc_status)
            if key not in self._http:           # a series folded into `unknown` is not remembered (overflow count)
                return series
            if len(self._by_identity) >= _MAX_IDENTITY_KEYS:
                self._by_identity.clear()   # new Workload objects per request must not grow this forever
            self._by_identity[fast_key] = (src, dst, series)
        # Kept with the objects themselves (so their ids cannot be reused while this holds them).
        self._last = (direction, src, dst, status, flags, grpc_status, series)
        return series

    def _byte_slot_pair(self, sizes: tuple[int, int]) -> tuple[int, int]:
        bounds = self._bytes_bounds
        slots = (bisect_left(bounds, sizes[0]), bisect_left(bounds, sizes[1]))
        if len(self._byte_slots) < _MAX_IDENTITY_KEYS:
            self._byte_slots[sizes] = slots
        return slots

    def _new_http_series(self, key: tuple[object, ...], grpc_status: object) -> _HttpSeries:
        """The series of `key` (direction, source, destination, status, flags, gRPC status), made now."""
        direction = cast(Direction, key[0])
        src, dst = cast(Workload, key[1]), cast(Workload, key[2])
        status, flags = cast(int, key[3]), cast(str, key[4])
        if len(self._http) + len(self._tcp) >= self._max_series:
            self._overflow += 1
            src = dst = UNKNOWN
            key = (direction, src, dst, *key[3:])
            existing = self._http.get(key)
            if existing is not None:
                return existing
        values = _identity_values(direction, src, dst)
        values += [
            "http" if grpc_status is None else "grpc",
            str(status),
            "" if grpc_status is None else str(grpc_status),
            flags,
            "none" if direction == "inbound" else _UNKNOWN,
        ]
        series = _HttpSeries(_join_labels(HTTP_LABELS, values), status, flags,
                             len(self._duration_bounds) + 1, len(self._bytes_bounds) + 1)
        self._http[key] = series
        return series

    def on_tcp_open(self, hop: Hop) -> _TcpSeries:
        """Count an opened TCP connection; the returned handle takes its byte counts and its close.

        Labels (flags included) are fixed here, as Istio fixes them when it first reports a connection.
        """
        key = (hop.direction, hop.source, hop.destination, hop.response_flags)
        series = self._tcp.get(key)
        if series is None:
            src, dst = hop.source, hop.destination
            if len(self._http) + len(self._tcp) >= self._max_series:
                self._overflow += 1
                src = dst = UNKNOWN
                key = (hop.direction, src, dst, hop.response_flags)
            series = self._tcp.get(key)
            if series is None:
                values = _identity_values(hop.direction, src, dst)
                values += ["tcp", hop.response_flags, "none" if hop.direction == "inbound" else _UNKNOWN]
                series = _TcpSeries(_join_labels(TCP_LABELS, values), hop.response_flags)
                self._tcp[key] = series
        series.opened += 1
        return series

    # -- reading -------------------------------------------------------------------------------------------

    def render(self) -> str:
        """The whole registry in Prometheus text exposition format 0.0.4."""
        out: list[str] = []
        http = list(self._http.values())
        tcp = list(self._tcp.values())
        out.append("# HELP istio_requests_total Total number of requests handled by this proxy.\n"
                   "# TYPE istio_requests_total counter\n")
        out.extend(f"istio_requests_total{{{s.labels}}} {s.requests}\n" for s in http)
        self._render_histogram(out, self._duration, http, "duration", "duration_sum")
        self._render_histogram(out, self._request_bytes, http, "request_bytes", "request_bytes_sum")
        self._render_histogram(out, self._response_bytes, http, "response_bytes", "response_bytes_sum")
        for name, help_text, attr in (
            ("istio_tcp_sent_bytes_total", "Bytes sent to the downstream peer of TCP connections.", "sent"),
            ("istio_tcp_received_bytes_total", "Bytes received from the downstream peer of TCP connections.",
             "received"),
            ("istio_tcp_connections_opened_total", "TCP connections opened.", "opened"),
            ("istio_tcp_connections_closed_total", "TCP connections closed.", "closed"),
        ):
            out.append(f"# HELP {name} {_escape_help(help_text)}\n# TYPE {name} counter\n")
            out.extend(f"{name}{{{s.labels}}} {getattr(s, attr)}\n" for s in tcp)
        return "".join(out)

    @staticmethod
    def _render_histogram(out: list[str], hist: _Histogram, series: Iterable[_HttpSeries],
                          buckets_attr: str, sum_attr: str) -> None:
        name = hist.name
        out.append(f"# HELP {name} {_escape_help(hist.help)}\n# TYPE {name} histogram\n")
        bucket_prefix = f"{name}_bucket{{"
        les = [f',le="{le}"}} ' for le in hist.le]
        for s in series:
            labels = s.labels
            running = 0
            for le, count in zip(les, getattr(s, buckets_attr), strict=True):
                running += count
                out.append(f"{bucket_prefix}{labels}{le}{running}\n")
            out.append(f"{name}_sum{{{labels}}} {_fmt_number(getattr(s, sum_attr))}\n")
            out.append(f"{name}_count{{{labels}}} {running}\n")

    def stats(self) -> dict[str, int]:
        """Envoy-style counters for `/stats`, derived from the series when asked (nothing extra per request)."""
        result: dict[str, int] = {"downstream_rq_total": 0, "downstream_rq_1xx": 0, "downstream_rq_2xx": 0,
                                  "downstream_rq_3xx": 0, "downstream_rq_4xx": 0, "downstream_rq_5xx": 0}
        for name in _FLAG_STATS.values():
            result[name] = 0
        for s in self._http.values():
            result["downstream_rq_total"] += s.requests
            if 100 <= s.status < 600:
                result[f"downstream_rq_{s.status // 100}xx"] += s.requests
            if s.flags != "-":
                for flag in s.flags.split(","):
                    counter = _FLAG_STATS.get(flag)
                    if counter is not None:
                        result[counter] += s.requests
        tcp = self._tcp.values()
        result["tcp_downstream_cx_total"] = sum(s.opened for s in tcp)
        result["tcp_downstream_cx_closed"] = sum(s.closed for s in tcp)
        result["tcp_downstream_cx_active"] = result["tcp_downstream_cx_total"] - result["tcp_downstream_cx_closed"]
        result["tcp_downstream_cx_rx_bytes_total"] = sum(s.received for s in tcp)
        result["tcp_downstream_cx_tx_bytes_total"] = sum(s.sent for s in tcp)
        result["tcp_upstream_cx_connect_fail"] = sum(s.opened for s in tcp if "UF" in s.flags.split(","))
        result["metrics_series"] = len(self._http) + len(self._tcp)
        result["metrics_series_overflow"] = self._overflow
        result["metrics_observer_errors"] = self._errors
        return result
