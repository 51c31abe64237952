"""Hop spans: a SERVER span per inbound request, a CLIENT span per outbound one, tagged like Envoy's and OTel's.

Theory of operation. `start()` extracts the incoming context with the configured propagator (any supported
format), marks a forced trace (`x-envoy-force-trace`, `x-client-trace-id`) in the context for `ProxySampler`,
and starts the span as a child of what arrived through `meshtrace.spans.start_span` (the core's cheapest way to
make an SDK span; `ProxySampler` is declared attribute-blind, so the core's light span is used whenever the
sampler it wraps is blind too); with nothing valid arriving the SDK makes fresh 128-bit ids. The headers going
upstream say every configured format for that span, so the next hop's span is a child of ours and never shares its
id. With a `MeshPropagator` and a plain context (no debug flag, no baggage: what nearly every request carries)
`render()` gives them as one ready header block for the request head, made from the span's ids by a function
compiled per kind of span context (meshtrace.propagation.render); `inject()` appends them as (name, value)
pairs, those of the block or, for any other context, what the propagator itself writes, and tests hold the two
equal. `finish()` sets Envoy's tags and the OTel semantic-convention attributes from the finished `Hop` in one
call and ends the span at the hop's own end time.

The encoded lane. When the tracer exports through meshtrace's OTLP pipeline alone (meshtrace.encodedlane says
when), the hop span is no SDK span: `start()` asks the lane for the span's context (the same sampler decision and
ids the SDK would make) and returns a `HopSpan` carrying it (proxy.hop_wire), and `finish()` writes the span's
OTLP bytes (`HopWire`) and queues them, so neither the event loop nor the export thread builds, copies or walks
an SDK span. Unsampled hops are a NonRecordingSpan either way. Any other pipeline (zipkin, file or console
export, a user's processor, custom limits, a sampler that may read attributes) keeps the SDK span;
tests/proxy/test_hop_wire.py holds both paths' exports equal.

Made ahead of time. Most requests at the edge, and every call an app makes without copying trace headers, start a
root span on an empty context; its ids, sampling decision and header block depend on nothing the request says.
`prepare()`, run when the loop is idle (after the hop reports, proxy.reports, a turn's worth at a time), makes up to
`READY` such spans on the encoded lane with their header blocks, and `start()` hands one out for a request without
trace headers, setting only its name and start time; `render()` then returns the block made with it. So a traced
request without trace headers costs about what an untraced one does between reading the request and writing it
upstream. They are dropped when the lane changes (the tracer's processors or config) and in a forked child (the
parent hands out the same ones).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from time import perf_counter_ns  # bound: compiled, `time.x()` is a module getattr, then the call
from typing import Any, cast

from opentelemetry import baggage as otel_baggage
from opentelemetry import trace
from opentelemetry.context import Context, set_value
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from meshtrace.encodedlane import EncodedLane, Started, encoded_lane
from meshtrace.exporters.encoded import TUPLE_CONTEXT
from meshtrace.propagation import MeshPropagator, is_debug
from meshtrace.propagation.render import CODES, Block, BlockKind, block
from meshtrace.spans import set_clean_attributes, start_span

from .headers import TRACE_HEADERS, Headers
from .hop import Hop
from .hop_span import HopSpan
from .hop_wire import HopWire, hop_error, protocol_version
from .sampler import FORCE, ProxySampler

__all__ = ["FORCE_TRACE_HEADERS", "READY", "HopTracer", "ProxySampler", "span_name"]

FORCE_TRACE_HEADERS = (b"x-envoy-force-trace", b"x-client-trace-id")

logger = logging.getLogger("meshtrace.proxy")

# Baggage-only formats put their entries in prefixed headers (Jaeger `uberctx-`, OT `ot-baggage-`).
_BAGGAGE_PREFIXES = (b"uberctx-", b"ot-baggage-")
_NOT_INJECTED = frozenset({b"x-request-id", b"baggage"})
_EMPTY = Context()      # immutable: the one context of every request without trace headers
_UINT64 = (1 << 64) - 1
# A SpanContext's fields, where it is a tuple (TUPLE_CONTEXT): trace id, span id, remote, flags, state, valid.
_ContextFields = tuple[int, int, Any, int, Any, Any]   # only the ints are checked (and so native)
#: Root spans `HopTracer.prepare` keeps made ahead of time, per listener.
READY = 8
# Bumped in a forked child: spans made ahead of time in the parent must not be handed out there too.
_forks = [0]


def _forked() -> None:
    _forks[0] += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


def _lane_span(lane: EncodedLane, started: Started, name: str, start_ns: int) -> trace.Span:
    """The span of a context `lane.start` gave: a HopSpan when it records, else a NonRecordingSpan."""
    span_context, parent, recording, sampled = started
    if not recording:
        return NonRecordingSpan(span_context)
    return HopSpan(span_context, parent, name, start_ns, sampled, lane)


def _header_to_inject(name: str) -> bytes | None:
    key = name.lower().encode("latin-1")
    return None if key in _NOT_INJECTED or key.startswith(_BAGGAGE_PREFIXES) else key


def span_name(authority: str, default_port: int, route_path: str) -> str:
    """Istio's route span name `{host}:{port}{path}`; the catch-all route's path is `/*`."""
    host, sep, port = authority.rpartition(":")
    if not sep or not port.isdigit():
        host, port = authority, str(default_port)
    return f"{host}:{port}{route_path}"


def _kind(index: int) -> BlockKind:
    """The kind of span context at `index` of `HopTracer._blocks`: flags | parent 4 | trace state 8 | 64-bit 16."""
    return index & 0x03, bool(index & 4), bool(index & 8), bool(index & 16)


def _plain(context: Context) -> bool:
    """Nothing in the extracted context that the byte renderer would not say the same way."""
    return not context or (not is_debug(context) and not otel_baggage.get_all(context))


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
        # A request with none of these (nor a baggage-prefixed one) starts a root span on an empty context.
        self._watched = self.extract_names | frozenset(FORCE_TRACE_HEADERS)
        # Header names in a request's order -> (those of them watched, the baggage-prefixed ones).
        self._layouts: dict[tuple[bytes, ...], tuple[frozenset[bytes], tuple[bytes, ...]]] = {}
        # Carrier name -> the header name to send, or None for one left out (cached: the same few every time).
        self._inject_names: dict[str, bytes | None] = {}
        formats = tuple(propagator.formats) if type(propagator) is MeshPropagator else None
        # The format codes to render, in the propagator's own order (baggage is never injected by the proxy); None
        # when the propagator must inject itself (or only has baggage, which it leaves out anyway).
        self._codes: tuple[int, ...] | None = (
            tuple(code for name in formats if (code := CODES[name]) is not None)
            if formats is not None and set(CODES).issuperset(formats) else None) or None
        # The function rendering the block of each kind of span context met, at the kind's index (`_kind`).
        self._blocks: list[Block | None] = [None] * 32
        self.static_attributes: dict[str, str] = {"component": "proxy", "node_id": node_id, "zone": zone,
                                                  "downstream_cluster": downstream_cluster}
        # authority -> (server.address, server.port or None): the same few authorities every time.
        self._authorities: dict[str, tuple[str, int | None]] = {}
        # The encoded lane of `tracer` (re-checked per span) and this listener's hop span encoder.
        self._lane: EncodedLane | None = None
        self._wire = HopWire(self.kind, self.static_attributes, self._authority)
        # Root spans made ahead of time (`prepare`) with their rendered header blocks, the lane and fork count they
        # were made under, and the last one handed out (its block is `render`'s answer for that span alone).
        self._ready: list[tuple[trace.Span, tuple[bytes, str, str] | None]] = []
        self._ready_lane: EncodedLane | None = None
        self._ready_forks = 0
        self._handed: tuple[trace.Span, tuple[bytes, str, str] | None] | None = None

    def start(self, hmap: Mapping[bytes, bytes], name: str, start_ns: int) -> tuple[trace.Span, Context]:
        """The hop's span, and the extracted context (debug, hints) that `inject` needs to say all of it again."""
        # Most requests at the edge carry no trace or force header at all: skip the propagator's dozen lookups
        # then. Which of the headers matter is known per layout of header names (clients repeat theirs).
        layout = tuple(hmap)
        headers = self._layouts.get(layout)
        if headers is None:
            headers = self._learn(layout)
        context = self._extract(hmap, *headers) if headers[0] or headers[1] else _EMPTY
        lane = self._lane
        # Per span, only what the SDK's API changes on a live tracer (encoded_lane checked the rest).
        if lane is None or not lane.unchanged(self.tracer):
            lane = self._lane = encoded_lane(self.tracer)
        if lane is not None:
            ready = self._ready
            # An empty context: no trace header arrived, or none that held a valid trace.
            if ready and not context and self._ready_lane is lane and self._ready_forks == _forks[0]:
                made = self._handed = ready.pop(0)      # in the order they were drawn, as the SDK would
                span = made[0]
                if span.__class__ is HopSpan:
                    span.name = name
                    span.start_time = start_ns
                return span, context
            started = lane.start(context)
            if started is not None:
                return _lane_span(lane, started, name, start_ns), context
        return start_span(self.tracer, name, context, self.kind, start_time=start_ns), context

    def _learn(self, layout: tuple[bytes, ...]) -> tuple[frozenset[bytes], tuple[bytes, ...]]:
        """The trace and force headers among the header names `layout`, and the baggage-prefixed ones (cached)."""
        headers = (self._watched.intersection(layout),
                   tuple(key for key in layout if key.startswith(_BAGGAGE_PREFIXES)))
        if len(self._layouts) >= 256:
            self._layouts.clear()
        self._layouts[layout] = headers
        return headers

    def _extract(self, hmap: Mapping[bytes, bytes], present: frozenset[bytes], prefixed: tuple[bytes, ...],
                 ) -> Context:
        """The context of a request carrying trace, baggage or force headers (`present`: the trace and force
        headers it has; `prefixed`: its baggage-prefixed ones)."""
        names = present.intersection(self.extract_names)
        if names or prefixed:
            # Hand the propagator a small str dict of just the headers it reads: with the default getter that is
            # MeshPropagator's fast extract (a third of the instructions of reading the byte map through a getter,
            # which makes it try every format and scan every name).
            carrier = {key.decode("latin-1"): hmap[key].decode("latin-1") for key in (*names, *prefixed)}
            context = self.propagator.extract(carrier)
        else:
            context = Context()
        if b"x-envoy-force-trace" in present or b"x-client-trace-id" in present:
            context = set_value(FORCE, True, context)
        return context

    def render(self, span: trace.Span, context: Context) -> tuple[bytes, str, str] | None:
        """The configured trace headers for `span` as one HTTP/1 header block (`name: value` CRLF each), with the
        span's hex trace and span ids (for the hop record); None when they are not rendered here: a context that
        is not plain (debug, baggage), an invalid span context, or a propagator this cannot speak for (`inject`
        writes those).

        Baggage is left out: the incoming baggage headers pass through untouched (W3C: propagate unchanged),
        and so does `x-request-id`, which the connection manager owns.
        """
        handed = self._handed
        if handed is not None and handed[0] is span:
            self._handed = None
            return handed[1]    # made with the span, ahead of time (`prepare`)
        codes = self._codes
        if codes is None or (context and not _plain(context)):
            return None
        if span.__class__ is HopSpan:   # the encoded lane's: its parent is valid or None
            sc, parent = span.context, span.parent
        else:   # SDK spans know their parent; a non-recording one does not
            sc = span.get_span_context()
            parent = getattr(span, "parent", None)
            if not isinstance(parent, SpanContext) or not parent.is_valid:
                parent = None
        if TUPLE_CONTEXT:   # the fields without five Python-level properties
            # Typed (SpanContext is Any to the compiler): a native unpack, and native arithmetic on the ints below.
            trace_id, span_id, _, trace_flags, trace_state, valid = cast("_ContextFields", sc)
        else:  # pragma: no cover - an API whose SpanContext is laid out differently
            trace_id, span_id, trace_flags, trace_state, valid = (sc.trace_id, sc.span_id, sc.trace_flags,
                                                                  sc.trace_state, sc.is_valid)
        if not valid:
            return None
        parent_id = (None if parent is None else cast("_ContextFields", parent)[1] if TUPLE_CONTEXT
                     else parent.span_id)
        # The shared empty TraceState (every root span's) is told without its Python-level len().
        state = trace_state is not DEFAULT_TRACE_STATE and bool(trace_state)
        # The kind as a list index, not a tuple to hash; a 64-bit trace id told by a comparison, not a 128-bit shift.
        index = ((trace_flags & 0x03) | (0 if parent_id is None else 4) | (8 if state else 0)
                 | (16 if trace_id <= _UINT64 else 0))
        render = self._blocks[index]
        if render is None:
            render = self._blocks[index] = block(codes, _kind(index))
        return render(trace_id, span_id, parent_id, trace_state.to_header() if state else "")

    def prepare(self, until: int | None = None) -> bool:
        """Make root spans ahead of time, with their header blocks, up to `READY` (see the module docstring); for
        when the loop has nothing else to do. With `until` (a `perf_counter_ns()` time), stops once it is reached,
        after one span at least. Returns whether more are wanted. Nothing before the first span has set up the
        encoded lane."""
        ready = self._ready
        lane = self._lane
        if lane is None or self._codes is None or not lane.unchanged(self.tracer):
            ready.clear()
            return False
        if self._ready_lane is not lane or self._ready_forks != _forks[0]:
            ready.clear()
            self._ready_lane = lane
            self._ready_forks = _forks[0]
        while len(ready) < READY:
            started = lane.start(_EMPTY)
            if started is None:
                return False    # a sampler whose root decision needs should_sample: the SDK span's way, per request
            span = _lane_span(lane, started, "", 0)     # its name and start time are set when it is handed out
            ready.append((span, self.render(span, _EMPTY)))
            if until is not None and perf_counter_ns() >= until:
                return len(ready) < READY
        return False

    def inject(self, span: trace.Span, context: Context, out: Headers) -> None:
        """Append the configured trace headers for `span` to `out` (which must not hold any already), as
        (name, value) pairs: the headers `render` gives, else what the propagator writes (baggage and
        `x-request-id` left out, as there)."""
        rendered = self.render(span, context)
        if rendered is not None:
            for line in rendered[0].split(b"\r\n")[:-1]:
                header, _, text = line.partition(b": ")
                out.append((header, text))
            return
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

    def _authority(self, authority: str) -> tuple[str, int | None]:
        parts = self._authorities.get(authority)
        if parts is None:
            host, _, port = authority.rpartition(":")
            if not host:
                host, port = authority, ""
            parts = (host, int(port) if port.isdigit() else None)
            if len(self._authorities) < 1024:
                self._authorities[authority] = parts
        return parts

    def finish(self, span: trace.Span, hop: Hop, end_ns: int) -> None:
        if span.__class__ is HopSpan:  # the encoded lane (the hop's bytes go straight to the export queue)
            if span.ended:
                return  # as the SDK span: ending twice changes nothing
            span.ended = True
            if span.sampled:  # recorded but not sampled (RECORD_ONLY): the SDK's processors drop it too
                try:
                    data = self._wire.encode(span, hop, end_ns)
                    lane = span.lane
                    # EncodedLane.export, inline (one call fewer per hop), the EncodedSpan as a plain tuple of its
                    # fields (meshtrace.exporters.encoded: no tuple subclass to allocate and free per hop).
                    lane.enqueue((lane.tracer.resource, lane.scope, span.context, data))
                except Exception:
                    # Telemetry never fails a request: this hop's span is lost, and said so.
                    logger.exception("meshtrace proxy: could not encode the span of a hop")
            return
        if span.__class__ is NonRecordingSpan:
            return  # an unsampled hop (99% of them at 1%): nothing to tag, ending it does nothing
        if span.is_recording():
            attributes: dict[str, str | int | bool] = dict(self.static_attributes)
            error, description = self._tags(hop, attributes)
            if error:
                span.set_status(Status(StatusCode.ERROR, description))
            set_clean_attributes(span, attributes)
        span.end(end_time=end_ns)

    def _tags(self, hop: Hop, attributes: dict[str, str | int | bool]) -> tuple[bool, str | None]:
        """Envoy's tags and the OTel HTTP attributes of `hop`, added to `attributes` in the order the span
        carries them; returns (error, status description) for the span's status."""
        status = hop.status
        path = hop.path
        host, port = self._authority(hop.authority)
        url = f"{hop.scheme}://{hop.authority}{path}"
        protocol = hop.protocol
        method = hop.method
        flags = hop.response_flags
        attributes["guid:x-request-id"] = hop.request_id
        attributes["http.url"] = url
        attributes["http.method"] = method
        attributes["http.protocol"] = protocol
        attributes["user_agent"] = hop.user_agent
        attributes["peer.address"] = hop.downstream_address
        attributes["request_size"] = hop.request_bytes
        attributes["response_size"] = hop.response_bytes
        attributes["upstream_cluster"] = hop.upstream_cluster
        attributes["upstream_address"] = hop.upstream_address
        attributes["http.status_code"] = status
        attributes["response_flags"] = flags
        attributes["http.request.method"] = method
        attributes["network.protocol.version"] = protocol_version(protocol)
        attributes["server.address"] = host
        if port is not None:
            attributes["server.port"] = port
        if status:
            attributes["http.response.status_code"] = status
        if self.inbound:
            target, _, query = path.partition("?")
            attributes["url.path"] = target
            attributes["url.scheme"] = hop.scheme
            if query:
                attributes["url.query"] = query
            attributes["client.address"] = hop.downstream_address.rpartition(":")[0]
            if hop.user_agent:
                attributes["user_agent.original"] = hop.user_agent
        else:
            attributes["url.full"] = url
        error = hop_error(status, flags, self.inbound)
        if error is not None:
            attributes["error"] = True
            attributes["error.type"] = error[0]
            return True, error[1]
        return False, None

    @staticmethod
    def ids(span: trace.Span) -> tuple[str, str]:
        """Hex trace and span ids for the hop record ("" when the span is not recording)."""
        context = span.get_span_context()
        if not context.is_valid:
            return "", ""
        return f"{context.trace_id:032x}", f"{context.span_id:016x}"
