"""A hand-written OTLP/protobuf encoder: SDK spans -> `ExportTraceServiceRequest` bytes, without protobuf objects.

Theory of operation. OpenTelemetry's encoder builds a protobuf message object per span, attribute and value,
then serialises the tree, and hashes every span's Resource (a JSON dump of its attributes) to group spans; that
is most of the export thread's time, all of it holding the GIL. This module writes the same bytes directly:

- protobuf wire format: a field is `varint(number << 3 | wire type)` then a varint (type 0), 8 little-endian
  bytes (type 1), a varint length and the bytes (type 2, strings and sub-messages) or 4 bytes (type 5).
  Field numbers are opentelemetry-proto's trace.proto, common.proto and resource.proto (v1).
- fields are written in field-number order and proto3 defaults are left out, as upb's serializer does, so for
  everything OpenTelemetry's encoder accepts the output is byte-for-byte the same (the tests check this with
  hypothesis-generated spans); oneof members (the AnyValue kinds) and set sub-messages are always written.
- spans are grouped by Resource and then by InstrumentationScope in first-seen order, with the SDK's equality
  (an identity test first, so the one Resource of a provider is never hashed); the encoded Resource and scope
  are cached per object, and the encoded `key` field of an attribute per key string.
- a value the SDK would not accept (an int beyond int64, an unknown type) is logged and its attribute left out,
  as OpenTelemetry's encoder does.
- an `EncodedSpan` (meshtrace.exporters.encoded: a span its maker already encoded, the sidecar's hop span) is
  grouped like an SDK span by its resource and scope, and its bytes are copied as they are; a batch of them alone
  under one resource and scope (the sidecar's usual batch) is told so and joined in a few C-level passes. A plain
  4-tuple of the same fields is taken as an EncodedSpan (see meshtrace.exporters.encoded).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from meshtrace.exporters.encoded import EncodedFields, EncodedSpan, kind_field, status_field
from meshtrace.exporters.encoded import attribute_key as _key
from meshtrace.exporters.encoded import varint as _varint

__all__ = ["encode_spans"]

_logger = logging.getLogger(__name__)
_Span = ReadableSpan | EncodedSpan

_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack
_SMALL = tuple(bytes((n,)) for n in range(128))
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_UINT64 = (1 << 64) - 1

# Span.flags: SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK (0x100), plus SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK (0x200).
_FLAGS_LOCAL = _pack_fixed32(0x100)
_FLAGS_REMOTE = _pack_fixed32(0x300)
_MISSING = object()
_TRUE, _FALSE = b"\x10\x01", b"\x10\x00"
_resource_cache: dict[int, tuple[Resource, bytes]] = {}
_scope_cache: dict[int, tuple[InstrumentationScope | None, bytes]] = {}
# Whole attribute fields by container tag, key and value: most of a hop span's tags repeat from span to span.
# Bounded: at most _CACHED_KEYS_MAX keys per tag, _CACHED_VALUES_MAX values per key (then that key's values are
# forgotten), fields under _CACHED_FIELD_MAX bytes. Floats are not cached (0.0 == -0.0, nan != nan).
_CACHEABLE = frozenset({str, int, bool})
_CACHED_KEYS_MAX = 256
_CACHED_VALUES_MAX = 64
_CACHED_FIELD_MAX = 256
_field_caches: dict[bytes, dict[str, dict[Any, tuple[type, bytes]]]] = {}


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: `tag`, the varint length, `payload`."""
    size = len(payload)
    return tag + (_SMALL[size] if size < 0x80 else _varint(size)) + payload


def _any_value(value: Any) -> bytes:
    """The body of an AnyValue message (same type tests, in the same order, as OpenTelemetry's encoder)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return _TRUE if value else _FALSE
    if isinstance(value, str):
        return _field(b"\x0a", value.encode("utf-8"))
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"Value out of range: {value}")
        return b"\x18" + _varint(value & _UINT64)
    if isinstance(value, float):
        return b"\x21" + _pack_double(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join([_field(b"\x0a", _any_value(item)) for item in value]))
    if isinstance(value, Mapping):
        return _field(b"\x32", b"".join([_field(b"\x0a", _key(str(k)) + _field(b"\x12", _any_value(v)))
                                          for k, v in value.items()]))
    raise TypeError(f"Invalid type {type(value)} of value {value}")


def _attributes(tag: bytes, attributes: Any, parts: list[bytes]) -> None:
    """Append one `tag` field (a KeyValue) per attribute to `parts`."""
    if not attributes:
        return
    caches = _field_caches.get(tag)
    if caches is None:
        caches = _field_caches.setdefault(tag, {})
    # BoundedAttributes (the SDK's container) iterates through MutableMapping's generic views, key by key
    # under a lock; its plain dict is read directly (the span has ended, nothing changes it any more).
    items = getattr(attributes, "_dict", attributes).items()
    for key, value in items:
        cls = value.__class__
        per_key: dict[Any, tuple[type, bytes]] | None = None
        if cls in _CACHEABLE:
            per_key = caches.get(key)
            if per_key is None:
                if len(caches) < _CACHED_KEYS_MAX:
                    per_key = caches[key] = {}
            else:
                hit = per_key.get(value)
                if hit is not None and hit[0] is cls:  # True == 1: the class must match too
                    parts.append(hit[1])
                    continue
        if cls is str:
            encoded = value.encode("utf-8")
            size = len(encoded)
            body = b"\x0a" + (_SMALL[size] if size < 0x80 else _varint(size)) + encoded
        else:
            try:
                body = _any_value(value)
            except Exception as error:
                _logger.exception("Failed to encode key %s: %s", key, error)
                continue
        keyed = _key(key)
        size = len(body)
        kv = keyed + b"\x12" + (_SMALL[size] if size < 0x80 else _varint(size)) + body
        size = len(kv)
        field = tag + (_SMALL[size] if size < 0x80 else _varint(size)) + kv
        if per_key is not None and size < _CACHED_FIELD_MAX:
            if len(per_key) >= _CACHED_VALUES_MAX:
                per_key.clear()  # a key whose values never repeat (a request id) churns only its own entries
            per_key[value] = (cls, field)
        parts.append(field)


def _raw_attributes(owner: Any) -> Any:
    # ReadableSpan.attributes wraps its BoundedAttributes in a MappingProxyType; read the container itself.
    raw = getattr(owner, "_attributes", None)
    return owner.attributes if raw is None else raw


def _resource(resource: Resource) -> bytes:
    """ResourceSpans.resource (field 1), whole, cached per Resource object."""
    cached = _resource_cache.get(id(resource))
    if cached is not None and cached[0] is resource:
        return cached[1]
    parts: list[bytes] = []
    _attributes(b"\x0a", resource.attributes, parts)
    encoded = _field(b"\x0a", b"".join(parts))
    if len(_resource_cache) >= 64:
        _resource_cache.clear()
    _resource_cache[id(resource)] = (resource, encoded)
    return encoded


def _scope(scope: InstrumentationScope | None) -> bytes:
    """ScopeSpans.scope (field 1), whole, cached per InstrumentationScope object."""
    cached = _scope_cache.get(id(scope))
    if cached is not None and cached[0] is scope:
        return cached[1]
    parts: list[bytes] = []
    if scope is not None:
        if scope.name:
            parts.append(_field(b"\x0a", scope.name.encode("utf-8")))
        if scope.version:
            parts.append(_field(b"\x12", scope.version.encode("utf-8")))
        _attributes(b"\x1a", scope.attributes, parts)
    encoded = _field(b"\x0a", b"".join(parts))
    if len(_scope_cache) >= 256:
        _scope_cache.clear()
    _scope_cache[id(scope)] = (scope, encoded)
    return encoded


def _status(span: ReadableSpan) -> bytes:
    status = span.status
    return b"" if status is None else status_field(status.status_code, status.description)


def _events(span: ReadableSpan, parts: list[bytes]) -> None:
    for event in span.events:
        body: list[bytes] = []
        if event.timestamp:
            body.append(b"\x09" + _pack_fixed64(event.timestamp))
        if event.name:
            body.append(_field(b"\x12", event.name.encode("utf-8")))
        _attributes(b"\x1a", event.attributes, body)
        if event.dropped_attributes:
            body.append(b"\x20" + _varint(event.dropped_attributes))
        parts.append(_field(b"\x5a", b"".join(body)))


def _links(span: ReadableSpan, parts: list[bytes]) -> None:
    # OpenTelemetry's encoder leaves Link.trace_state (field 3) out; so does this one, to send the same bytes.
    for link in span.links:
        context = link.context
        body = [b"\x0a\x10" + context.trace_id.to_bytes(16, "big"), b"\x12\x08" + context.span_id.to_bytes(8, "big")]
        _attributes(b"\x22", link.attributes, body)
        if link.dropped_attributes:
            body.append(b"\x28" + _varint(link.dropped_attributes))
        body.append(b"\x35" + (_FLAGS_REMOTE if context.is_remote else _FLAGS_LOCAL))
        parts.append(_field(b"\x6a", b"".join(body)))


def _span(span: ReadableSpan) -> bytes:
    """ScopeSpans.spans (field 2): one Span, whole."""
    context = span.get_span_context()
    assert context is not None
    parts = [b"\x0a\x10" + context.trace_id.to_bytes(16, "big"), b"\x12\x08" + context.span_id.to_bytes(8, "big")]
    trace_state = context.trace_state
    if trace_state:
        parts.append(_field(b"\x1a", ",".join([f"{k}={v}" for k, v in trace_state.items()]).encode("utf-8")))
    parent = span.parent
    if parent is not None:
        parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    if span.name:
        parts.append(_field(b"\x2a", span.name.encode("utf-8")))
    parts.append(kind_field(span.kind))
    if span.start_time:
        parts.append(b"\x39" + _pack_fixed64(span.start_time))
    if span.end_time:
        parts.append(b"\x41" + _pack_fixed64(span.end_time))
    _attributes(b"\x4a", _raw_attributes(span), parts)
    if span.dropped_attributes:
        parts.append(b"\x50" + _varint(span.dropped_attributes))
    if span.events:
        _events(span, parts)
    if span.dropped_events:
        parts.append(b"\x60" + _varint(span.dropped_events))
    if span.links:
        _links(span, parts)
    if span.dropped_links:
        parts.append(b"\x70" + _varint(span.dropped_links))
    parts.append(_status(span))
    parts.append(b"\x85\x01" + (_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL))
    return _field(b"\x12", b"".join(parts))


def _group(spans: Sequence[_Span], key: Callable[[_Span], Any]) -> list[tuple[Any, list[_Span]]]:
    """`spans` grouped by `key(span)` with the SDK's equality, groups and members in first-seen order.

    Grouped by object identity first (no hashing of a Resource); only when distinct objects turn out equal
    are the spans walked again to merge their groups.
    """
    if spans:
        # Usually one provider's spans: one Resource, one scope, told with C-level passes (identity first).
        objects = list(map(_ATTRIBUTE[key], spans))
        only = objects[0]
        if (only is None or only) and objects.count(only) == len(objects):
            return [(only, list(spans))]
    groups: dict[int, tuple[Any, list[_Span]]] = {}
    last: Any = _MISSING
    members: list[_Span] = []
    for span in spans:
        obj = key(span)
        if obj is not last:
            entry = groups.get(id(obj))
            if entry is None:
                entry = groups[id(obj)] = (obj, [])
            last, members = obj, entry[1]
        members.append(span)
    if len(groups) <= 1:
        return list(groups.values())
    first: dict[Any, Any] = {}
    canonical = {ident: first.setdefault(obj, obj) for ident, (obj, _) in groups.items()}
    if len(first) == len(groups):
        return list(groups.values())
    merged: dict[int, tuple[Any, list[_Span]]] = {}
    for span in spans:
        obj = canonical[id(key(span))]
        entry = merged.get(id(obj))
        if entry is None:
            entry = merged[id(obj)] = (obj, [])
        entry[1].append(span)
    return list(merged.values())


def _resource_of(span: ReadableSpan | EncodedSpan) -> Resource:
    return span.resource


def _scope_of(span: ReadableSpan | EncodedSpan) -> InstrumentationScope | None:
    return span.instrumentation_scope or None


# The attribute each grouping key reads (the scope's `or None` is kept by `_group`'s truthiness check).
_ATTRIBUTE: dict[Callable[[Any], Any], Callable[[Any], Any]] = {
    _resource_of: attrgetter("resource"), _scope_of: attrgetter("instrumentation_scope")}


def _encoded_batch(spans: Sequence[ReadableSpan | EncodedSpan | EncodedFields]) -> bytes | None:
    """`encode_spans` for a batch of EncodedSpans of one Resource and one scope (the sidecar's every batch) in a
    few C-level passes; None for any other batch."""
    try:
        # EncodedSpans are tuples: transposed in one C pass (a third of reading each field through map()).
        resources, scopes, _, datas = zip(*spans, strict=True)
    except (TypeError, ValueError):   # an SDK span (not a tuple) among them
        return None
    resource, scope = resources[0], scopes[0]
    count = len(resources)
    # Equal counts as the same group, as `_group` merges equal objects: one group here, in first-seen order.
    if resources.count(resource) != count or scopes.count(scope) != count:
        return None
    scope_bytes = _scope(scope)
    schema = _field(b"\x1a", scope.schema_url.encode("utf-8")) if scope is not None and scope.schema_url else b""
    scope_spans_size = len(scope_bytes) + sum(map(len, datas)) + len(schema)
    resource_bytes, scope_spans = _resource(resource), b"\x12" + _varint(scope_spans_size)
    resource_schema = _field(b"\x1a", resource.schema_url.encode("utf-8")) if resource.schema_url else b""
    size = len(resource_bytes) + len(scope_spans) + scope_spans_size + len(resource_schema)
    # The spans' bytes are copied once, by this join (a batch is a few hundred kB).
    return b"".join([b"\x0a", _varint(size), resource_bytes, scope_spans, scope_bytes, *datas, schema,
                     resource_schema])


def encode_spans(spans: Sequence[ReadableSpan | EncodedSpan | EncodedFields]) -> bytes:
    """The serialized `ExportTraceServiceRequest` for `spans` (what `encode_spans(spans).SerializeToString()`
    of opentelemetry-exporter-otlp-proto-common gives), EncodedSpans included as they are."""
    # The hop path queues its EncodedSpans as plain 4-tuples (meshtrace.exporters.encoded): tuples either way.
    if spans and ((first := spans[0].__class__) is tuple or first is EncodedSpan):
        encoded = _encoded_batch(spans)
        if encoded is not None:
            return encoded
    # A batch `_encoded_batch` does not take: the plain tuples as EncodedSpans, for the grouping's field names.
    named = [span if isinstance(span, (ReadableSpan, EncodedSpan)) else EncodedSpan._make(span) for span in spans]
    out: list[bytes] = []
    for resource, resource_spans in _group(named, _resource_of):
        body = [_resource(resource)]
        for scope, scope_spans in _group(resource_spans, _scope_of):
            encoded_spans = [span.data if isinstance(span, EncodedSpan) else _span(span) for span in scope_spans]
            scope_bytes = _scope(scope)
            schema = _field(b"\x1a", scope.schema_url.encode("utf-8")) if scope is not None and scope.schema_url \
                else b""
            size = len(scope_bytes) + sum(map(len, encoded_spans)) + len(schema)
            body.append(b"\x12" + _varint(size))
            body.append(scope_bytes)
            body.extend(encoded_spans)
            body.append(schema)
        if resource.schema_url:
            body.append(_field(b"\x1a", resource.schema_url.encode("utf-8")))
        out.append(b"\x0a" + _varint(sum(map(len, body))))
        out.extend(body)
    return b"".join(out)
