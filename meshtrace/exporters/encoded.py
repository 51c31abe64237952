"""Pre-encoded spans: a finished span handed to the export pipeline as the bytes of its OTLP `Span` message.

Theory of operation. A span whose whole life one caller knows (the sidecar's hop span: started when a request
head arrives, tagged once and ended when the exchange is over) need not become an SDK span at all: the caller
writes the protobuf bytes of its OTLP `Span` message once, with `encode_span` and `attribute` below, from
fragments it caches (tags that repeat request after request encode to the same bytes). The export thread then
only concatenates bytes, which matters because it holds the GIL while it encodes and so stalls the event loop.

An `EncodedSpan` carries those bytes with what `otlp_wire.encode_spans` groups spans by (the Resource and the
InstrumentationScope, the very objects the SDK span would carry) and its SpanContext (the processor's sampled
check). The request path may queue it as a plain tuple of the same four fields instead (a plain tuple is
built by one bytecode and freed to a free list, where a tuple subclass's allocation and deallocation cost about
2.7k instructions per span): `otlp_wire.encode_spans` reads either. It is not a ReadableSpan: only a pipeline
that says it accepts them may be handed one. The pipeline
says so through an `accepts_encoded()` method, true only when the whole chain below it can: the
DroppingBatchSpanProcessor, the GuardedExporter it exports through, and the FastOTLPSpanExporter inside, which
encodes with `otlp_wire` (`accepts_encoded(obj)` here asks any of them). Everything else (zipkin, file and
console exporters, the SDK's processors, a user's own) keeps receiving SDK spans.

`encode_span` writes the fields as `otlp_wire` writes them for an SDK span (field-number order, proto3 defaults
left out, status always written, the remote-parent bits in `flags`), so the same span is the same bytes either
way; tests/tracing/test_encoded_span.py holds the two equal.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, StatusCode, TraceFlags
from opentelemetry.trace.span import DEFAULT_TRACE_STATE, TraceState

__all__ = [
    "FLAGS_LOCAL",
    "FLAGS_REMOTE",
    "TUPLE_CONTEXT",
    "EncodedFields",
    "EncodedSpan",
    "accepts_encoded",
    "attribute",
    "attribute_key",
    "encode_span",
    "kind_field",
    "name_field",
    "pack_times",
    "status_field",
    "string_field",
    "varint",
]

_pack_fixed64 = struct.Struct("<Q").pack
_pack_ids = struct.Struct(">2sQQ2sQ").pack          # Span.trace_id and Span.span_id, tags and lengths included
_pack_parent = struct.Struct(">2sQ").pack           # Span.parent_span_id
_pack_times = pack_times = struct.Struct("<cQcQ").pack  # Span.start_time_unix_nano and .end_time_unix_nano
_pack_double = struct.Struct("<d").pack
_SMALL = tuple(bytes((n,)) for n in range(128))
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_UINT64 = (1 << 64) - 1
# Span.flags (field 16, fixed32): SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK, plus ..._IS_REMOTE_MASK for a remote parent.
_FLAGS_LOCAL = FLAGS_LOCAL = b"\x85\x01" + struct.pack("<I", 0x100)
_FLAGS_REMOTE = FLAGS_REMOTE = b"\x85\x01" + struct.pack("<I", 0x300)
_KIND = {kind: b"\x30" + _SMALL[kind.value + 1] for kind in SpanKind}
_STATUS_UNSET = b"\x7a\x00"
#: SpanContext is a tuple (trace id, span id, remote, flags, trace state, valid): unpacked in one step when so.
TUPLE_CONTEXT = _TUPLE_CONTEXT = tuple(SpanContext(1, 2, True, TraceFlags(1), TraceState([("k", "v")]))) == (
    1, 2, True, TraceFlags(1), TraceState([("k", "v")]), True)
_KEYS_MAX = 4096
_keys: dict[str, bytes] = {}


class EncodedSpan(NamedTuple):
    """A finished, sampled span as the whole `ScopeSpans.spans` field (tag, length, `Span` message).

    A named tuple: one is made per exported span on the request path, and a tuple is made without a Python-level
    `__init__` (`EncodedSpan._make((resource, scope, context, data))` or tuple.__new__); its fields are read by
    C-level accessors on the export thread."""

    resource: Resource
    instrumentation_scope: InstrumentationScope | None
    context: SpanContext
    data: bytes

    def __repr__(self) -> str:
        return f"EncodedSpan(trace_id={self.context.trace_id:032x}, span_id={self.context.span_id:016x})"


#: An EncodedSpan's fields as a plain tuple (resource, scope, context, data): what the sidecar's hop path queues.
EncodedFields = tuple[Resource, InstrumentationScope | None, SpanContext, bytes]


def accepts_encoded(obj: object) -> bool:
    """True when `obj` (a span processor or exporter) says it takes EncodedSpans along with SDK spans."""
    method: Any = getattr(obj, "accepts_encoded", None)
    if not callable(method):
        return False
    try:
        return method() is True
    except Exception:
        return False


def varint(value: int) -> bytes:
    """An unsigned protobuf varint (`value` in 0 .. 2**64-1)."""
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(key: str) -> bytes:
    """`KeyValue.key` (field 1), cached per key string."""
    encoded = _keys.get(key)
    if encoded is None:
        raw = key.encode("utf-8")
        encoded = b"\x0a" + varint(len(raw)) + raw if raw else b""
        if len(_keys) < _KEYS_MAX:
            _keys[key] = encoded
    return encoded


def attribute(key: str, value: str | bool | int | float) -> bytes | None:
    """One `Span.attributes` field (a KeyValue) for a `str`, `bool`, `int` or `float` value, as `otlp_wire`
    writes it; None for an int outside int64, which OpenTelemetry's encoder (and so `otlp_wire`) leaves out.
    Any other value type raises TypeError (those are for `otlp_wire`, from an SDK span)."""
    if isinstance(value, bool):
        body = b"\x10\x01" if value else b"\x10\x00"
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        body = b"\x0a" + varint(len(raw)) + raw
    elif isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            return None
        body = b"\x18" + varint(value & _UINT64)
    elif isinstance(value, float):
        body = b"\x21" + _pack_double(value)
    else:
        raise TypeError(f"Invalid type {type(value)} of value {value}")
    kv = _key(key) + b"\x12" + varint(len(body)) + body
    return b"\x4a" + varint(len(kv)) + kv


def encode_span(  # noqa: PLR0917  (one argument per Span field)
    context: SpanContext,
    parent: SpanContext | None,
    name: bytes,
    kind: bytes,
    start_time: int,
    end_time: int,
    attributes: bytes,
    status: bytes = _STATUS_UNSET,
) -> bytes:
    """The `ScopeSpans.spans` field of one span without events or links. `name`, `kind` and `status` are the
    encoded fields (`name_field`, `kind_field`, `status_field`: callers cache them), `attributes` the
    concatenated `attribute` fields; the status defaults to UNSET."""
    if _TUPLE_CONTEXT:
        trace_id, span_id, _, _, trace_state, _ = context
    else:  # pragma: no cover - an API whose SpanContext is laid out differently
        trace_id, span_id, trace_state = context.trace_id, context.span_id, context.trace_state
    # Both id fields in one pack (the 128-bit trace id as its two big-endian halves).
    head = _pack_ids(b"\x0a\x10", trace_id >> 64, trace_id & _UINT64, b"\x12\x08", span_id)
    if trace_state is not DEFAULT_TRACE_STATE and trace_state:
        state = ",".join([f"{k}={v}" for k, v in trace_state.items()]).encode("utf-8")
        head += b"\x1a" + varint(len(state)) + state
    if parent is None:
        flags = _FLAGS_LOCAL
    else:
        head += _pack_parent(b"\x22\x08", parent.span_id)
        flags = _FLAGS_REMOTE if parent.is_remote else _FLAGS_LOCAL
    if start_time and end_time:     # a span's times: both fixed64 fields in one pack
        times = _pack_times(b"\x39", start_time, b"\x41", end_time)
    else:   # proto3 leaves a zero out
        times = (b"\x39" + _pack_fixed64(start_time) if start_time else b"") + (
            b"\x41" + _pack_fixed64(end_time) if end_time else b"")
    span = b"".join((head, name, kind, times, attributes, status, flags))
    size = len(span)
    if size < 0x4000:   # a hop span: a few hundred bytes, a two-byte length
        return b"\x12" + (_SMALL[size] if size < 0x80 else bytes(((size & 0x7F) | 0x80, size >> 7))) + span
    return b"\x12" + varint(size) + span


def kind_field(kind: SpanKind) -> bytes:
    """The encoded `Span.kind` field for `encode_span` (the proto's kinds are SpanKind's values plus one)."""
    return _KIND[kind]


def status_field(code: StatusCode, description: str | None = None) -> bytes:
    """The encoded `Span.status` field for `encode_span` (always written, as the OTLP encoders do)."""
    body = b""
    if description:
        raw = description.encode("utf-8")
        body = b"\x12" + varint(len(raw)) + raw
    if code.value:
        body += b"\x18" + varint(code.value)
    return b"\x7a" + varint(len(body)) + body


def string_field(key: bytes, value: str) -> bytes:
    """`attribute(k, value)` for a `str` value, given `key` = `attribute_key(k)`: for a value that never repeats."""
    raw = value.encode("utf-8")
    size = len(raw)
    if size < 0x7C - len(key):  # every length below fits one varint byte: one C-level format
        return b"\x4a%c%b\x12%c\x0a%c%b" % (size + len(key) + 4, key, size + 2, size, raw)
    body = b"\x0a" + varint(size) + raw
    kv = key + b"\x12" + varint(len(body)) + body
    return b"\x4a" + varint(len(kv)) + kv


def attribute_key(key: str) -> bytes:
    """The encoded `KeyValue.key` of `key`, for `string_field`."""
    return _key(key)


def name_field(name: str) -> bytes:
    """The encoded `Span.name` field for `encode_span` (empty for an empty name, as proto3 leaves it out)."""
    raw = name.encode("utf-8")
    return b"\x2a" + varint(len(raw)) + raw if raw else b""
