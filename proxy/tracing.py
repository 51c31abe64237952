"""Hop spans: a SERVER span per inbound request, a CLIENT span per outbound one, tagged like Envoy's and OTel's.

Theory of operation. `start()` extracts the incoming context with the configured propagator (any supported
format), marks a forced trace (`x-envoy-force-trace`, `x-client-trace-id`) in the context for `ProxySampler`,
and starts the span as a child of what arrived; with nothing valid arriving the SDK makes fresh 128-bit ids.
`inject()` writes every configured format for that span into the headers going upstream, so the next hop's
span is a child of ours and never shares its id. `finish()` sets Envoy's tags and the OTel semantic-convention
attributes from the finished `Hop` in one call and ends the span at the hop's own end time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from opentelemetry import trace
from opentelemetry.context import Context, create_key, get_value, set_value
from opentelemetry.propagators.textmap import Getter, TextMapPropagator
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from meshtrace.spans import set_clean_attributes

from .headers import TRACE_HEADERS, Headers
from .hop import Hop

__all__ = ["FORCE_TRACE_HEADERS", "HopTracer", "ProxySampler", "span_name"]

FORCE_TRACE_HEADERS = (b"x-envoy-force-trace", b"x-client-trace-id")

# Baggage-only formats put their entries in prefixed headers (Jaeger `uberctx-`, OT `ot-baggage-`).
_BAGGAGE_PREFIXES = (b"uberctx-", b"ot-baggage-")
_NOT_INJECTED = frozenset({b"x-request-id", b"baggage"})
_FORCE = create_key("meshtrace-proxy-force-trace")
_INVALID = trace.INVALID_SPAN


def _header_to_inject(name: str) -> bytes | None:
    key = name.lower().encode("latin-1")
    return None if key in _NOT_INJECTED or key.startswith(_BAGGAGE_PREFIXES) else key


class _BytesGetter(Getter[Mapping[bytes, bytes]]):
    """Reads the codec's `{lowercase name: value}` byte map without building a str dict per request."""

    def get(self, carrier: Mapping[bytes, bytes], key: str) -> list[str] | None:
        value = carrier.get(key.lower().encode("latin-1"))
        return None if value is None else [value.decode("latin-1")]

    def keys(self, carrier: Mapping[bytes, bytes]) -> list[str]:
        return [name.decode("latin-1") for name in carrier]


_GETTER = _BytesGetter()


class ProxySampler(Sampler):
    """Sample forced requests; otherwise defer (meshtrace.configure wraps this to honour incoming hints)."""

    def __init__(self, delegate: Sampler) -> None:
        self.delegate = delegate

    def should_sample(  # noqa: PLR0917  (the SDK Sampler signature)
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if parent_context is not None and get_value(_FORCE, parent_context) is True:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, trace_state)
        return self.delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"ProxySampler{{{self.delegate.get_description()}}}"


def span_name(authority: str, default_port: int, route_path: str) -> str:
    """Istio's route span name `{host}:{port}{path}`; the catch-all route's path is `/*`."""
    host, sep, port = authority.rpartition(":")
    if not sep or not port.isdigit():
        host, port = authority, str(default_port)
    return f"{host}:{port}{route_path}"


class HopTracer:
    """Makes the spans of one listener (`kind` SERVER for inbound, CLIENT for outbound)."""

    def __init__(self, tracer: trace.Tracer, propagator: TextMapPropagator, *, inbound: bool,
                 node_id: str = "", zone: str = "", downstream_cluster: str = "-") -> None:
        self.tracer = tracer
        self.propagator = propagator
        self.kind = SpanKind.SERVER if inbound else SpanKind.CLIENT
        self.inbound = inbound
        fields = {name.lower().encode("latin-1") for name in propagator.fields}
        self.extract_names = frozenset(fields | TRACE_HEADERS | {b"x-request-id", b"baggage"})
        # Carrier name -> the header name to send, or None for one left out (cached: the same few every time).
        self._inject_names: dict[str, bytes | None] = {}
        self.static_attributes: dict[str, str] = {"component": "proxy", "node_id": node_id, "zone": zone,
                                                  "downstream_cluster": downstream_cluster}

    def start(self, hmap: Mapping[bytes, bytes], name: str, start_ns: int) -> tuple[trace.Span, Context]:
        """The hop's span, and the extracted context (debug, hints) that `inject` needs to say all of it again."""
        # Most requests at the edge carry no trace header at all: skip the propagator's dozen lookups then.
        if self.extract_names.isdisjoint(hmap) and not any(name.startswith(_BAGGAGE_PREFIXES) for name in hmap):
            context = Context()
        else:
            context = self.propagator.extract(hmap, getter=_GETTER)
        if b"x-envoy-force-trace" in hmap or b"x-client-trace-id" in hmap:
            context = set_value(_FORCE, True, context)
        span = self.tracer.start_span(name, context=context, kind=self.kind, start_time=start_ns,
                                      record_exception=False, set_status_on_exception=False)
        return span, context

    def inject(self, span: trace.Span, context: Context, out: Headers) -> None:
        """Append the configured trace headers for `span` to `out` (which must not hold any already).

        Baggage is left out: the incoming baggage headers pass through untouched (W3C: propagate unchanged),
        and so does `x-request-id`, which the connection manager owns.
        """
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, context=trace.set_span_in_context(span, context))
        names = self._inject_names
        for name, value in carrier.items():
            try:
                key = names[name]
            except KeyError:
                key = _header_to_inject(name)
                if len(names) < 256:
                    names[name] = key
            if key is not None:
                out.append((key, value.encode("latin-1")))

    def finish(self, span: trace.Span, hop: Hop, end_ns: int) -> None:
        if span.is_recording():
            status = hop.status
            target, _, query = hop.path.partition("?")
            host, _, port = hop.authority.rpartition(":")
            if not host:
                host, port = hop.authority, ""
            url = f"{hop.scheme}://{hop.authority}{hop.path}"
            attributes: dict[str, str | int | bool] = {
                **self.static_attributes,
                "guid:x-request-id": hop.request_id,
                "http.url": url,
                "http.method": hop.method,
                "http.protocol": hop.protocol,
                "user_agent": hop.user_agent,
                "peer.address": hop.downstream_address,
                "request_size": hop.request_bytes,
                "response_size": hop.response_bytes,
                "upstream_cluster": hop.upstream_cluster,
                "upstream_address": hop.upstream_address,
                "http.status_code": status,
                "response_flags": hop.response_flags,
                "http.request.method": hop.method,
                "network.protocol.version": hop.protocol.removeprefix("HTTP/"),
                "server.address": host,
            }
            if port.isdigit():
                attributes["server.port"] = int(port)
            if status:
                attributes["http.response.status_code"] = status
            if self.inbound:
                attributes["url.path"] = target
                attributes["url.scheme"] = hop.scheme
                if query:
                    attributes["url.query"] = query
                attributes["client.address"] = hop.downstream_address.rpartition(":")[0]
                if hop.user_agent:
                    attributes["user_agent.original"] = hop.user_agent
            else:
                attributes["url.full"] = url
            failed = status >= 500 or status == 0 or (not self.inbound and status >= 400)
            if failed:
                attributes["error"] = True
                attributes["error.type"] = str(status) if status else (hop.response_flags or "no_response")
                span.set_status(Status(StatusCode.ERROR, hop.response_flags if hop.response_flags != "-" else None))
            set_clean_attributes(span, attributes)
        span.end(end_time=end_ns)

    @staticmethod
    def ids(span: trace.Span) -> tuple[str, str]:
        """Hex trace and span ids for the hop record ("" when the span is not recording)."""
        context = span.get_span_context()
        if not context.is_valid:
            return "", ""
        return f"{context.trace_id:032x}", f"{context.span_id:016x}"
