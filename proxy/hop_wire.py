"""The hop span on meshtrace's encoded lane: a span context while the exchange runs, OTLP bytes when it ends.

Theory of operation. When the hop tracer's provider exports through meshtrace's OTLP pipeline
(meshtrace.encodedlane), a hop span is a `HopSpan`: a NonRecordingSpan that carries its SpanContext, its parent's,
its name and start time, and says `is_recording()` True until it ends when it is recording, so the rest of the
proxy cannot tell it from the SDK span it replaces (`trace.set_span_in_context(hop_span)` parents the attempt and
mirror spans; the hop tracer's `inject` reads `parent` for B3's parent id). Its mutators do nothing: the hop
tracer sets every tag at the end, from the finished `Hop`.

`HopWire.encode` writes the ended span as one OTLP `Span` message (meshtrace.exporters.encoded.encode_span): the
listener's static tags are encoded once, and everything but the ids, the times and the request id is cached per
whole hop (the span name and every hop field a tag depends on: on a busy listener the same few combinations
repeat request after request), so a hop usually costs one dictionary look-up, the request id's field and the
span's assembly, rather than an SDK span and its encoding on the export thread. A hop not seen yet is put
together from smaller cached fragments, each keyed by the hop fields its tags depend on (URL, client, peer,
outcome), so a hop whose sizes or client port are new still finds most of its tags encoded. The tags and their
order are those the SDK path sets (`HopTracer._tags`); tests/proxy/test_hop_wire.py holds the two paths'
messages byte-equal.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from meshtrace.exporters.encoded import (
    FLAGS_LOCAL,
    FLAGS_REMOTE,
    TUPLE_CONTEXT,
    attribute,
    attribute_key,
    encode_span,
    kind_field,
    name_field,
    status_field,
    string_field,
)

from .hop import Hop
from .hop_span import HopSpan

__all__ = ["HopWire", "hop_error", "protocol_version"]

_T = TypeVar("_T")
_REQUEST_ID = attribute_key("guid:x-request-id")
# The request id's KeyValue (field 9 of Span) holds the key, then the AnyValue (its own tag and length) holding the
# string (tag and length): 4 bytes besides the key and the value when every length fits one byte.
_REQUEST_ID_KV = len(_REQUEST_ID) + 4
_REQUEST_ID_MAX = 0x80 - _REQUEST_ID_KV
_NO_STATE = DEFAULT_TRACE_STATE
# (name and kind fields, tags after the request id, status field, message size without the parent and the request
# id's bytes, packers by (request id length, parent kind)).
_Parts = tuple[bytes, bytes, bytes, int, dict[int, "_Packer | Literal[False]"]]
# (struct pack of: the head to the trace id, the ids (and tags between), name and kind, 0x39, start, 0x41, end,
# tags to the request id's bytes, those bytes, the rest; then the constant head, middle and tail it is given).
# Packers are keyed by shape: the request id's length << 2 | the parent's kind (0 none, 1 local, 2 remote).
_Packer = tuple[Callable[..., bytes], bytes, bytes, bytes]
_UNSET = status_field(StatusCode.UNSET)


def protocol_version(protocol: str) -> str:
    """`network.protocol.version` of a hop's protocol: "HTTP/1.1" -> "1.1"; "tcp" stays."""
    return protocol[5:] if protocol.startswith("HTTP/") else protocol


def hop_error(status: int, flags: str, inbound: bool) -> tuple[str, str | None] | None:
    """(`error.type`, the status description) when a hop span is an error, else None: no response or a 5xx,
    and a 4xx too on the client side (OTel HTTP conventions). Both span paths (the SDK one in tracing.py and
    this module's) take the rule from here."""
    if status >= 500 or status == 0 or (not inbound and status >= 400):
        return (str(status) if status else (flags or "no_response")), (flags if flags != "-" else None)
    return None


def _field(key: str, value: str | int | bool) -> bytes:
    return attribute(key, value) or b""  # None: an int beyond int64, which the OTLP encoders leave out too


class HopWire:
    """Encodes one listener's hop spans; `static` are the tags every one of its spans starts with.

    The tags are those of `HopTracer._tags`, in its order. All but the request id are cached per whole hop (the
    span name and the hop fields below); a hop not seen yet is put together from fragments cached by the hop
    fields they depend on: the URL (scheme, authority, path), the client (method, protocol, user agent), the
    peer address, and the outcome (sizes, cluster, upstream, status, flags, method, protocol, authority), which
    also decides the status; an outcome not seen yet is put together from its sizes' tags and the rest's, each
    cached too. Only the request id is encoded for every hop. Each cache holds at most `CACHED` entries (then
    starts afresh).
    """

    CACHED = 512

    def __init__(self, kind: SpanKind, static: dict[str, str],
                 authority: Callable[[str], tuple[str, int | None]]) -> None:
        self.kind = kind_field(kind)
        self.inbound = kind is SpanKind.SERVER
        self.static = b"".join(_field(key, value) for key, value in static.items())
        self._authority = authority
        self._names: dict[str, bytes] = {}
        # (span name, hop fields) -> (name and kind fields, the tags after the request id, status field, the
        # Span message's size without the parent and request id bytes, its packers by shape).
        self._hops: dict[tuple[object, ...], _Parts] = {}
        self._urls: dict[tuple[str, str, str], tuple[bytes, bytes]] = {}
        self._clients: dict[tuple[str, str, str], tuple[bytes, bytes]] = {}
        self._peers: dict[str, tuple[bytes, bytes]] = {}
        self._outcomes: dict[tuple[object, ...], tuple[bytes, bytes, bytes]] = {}
        self._sizes: dict[tuple[int, int], bytes] = {}
        self._rests: dict[tuple[object, ...], tuple[bytes, bytes, bytes]] = {}

    def encode(self, span: HopSpan, hop: Hop, end_ns: int) -> bytes:
        """The `ScopeSpans.spans` field of `span` for the finished `hop`, ended at `end_ns`."""
        key = (span.name, hop.scheme, hop.authority, hop.path, hop.method, hop.protocol, hop.user_agent,
               hop.downstream_address, hop.request_bytes, hop.response_bytes, hop.upstream_cluster,
               hop.upstream_address, hop.status, hop.response_flags)
        parts = self._hops.get(key)
        if parts is None:
            parts = self._remember(self._hops, key, self._parts(span.name, hop))
        context, parent, start = span.context, span.parent, span.start_time
        request_id = hop.request_id.encode()    # UTF-8, without naming it (a cheaper call)
        # The usual span: ids without a trace state and both times, in one struct made for this hop's shape (the
        # request id's length and the parent's kind); the fields as `encode_span` writes them.
        if TUPLE_CONTEXT and context[4] is _NO_STATE and start and end_ns:
            # The shape as one int (request id length, and 0 for a root, 1 a local parent, 2 a remote one): no
            # tuple to make and hash.
            shape = len(request_id) << 2 | (0 if parent is None else 2 if parent[2] else 1)
            packer = parts[4].get(shape)
            if packer is None:
                packer = self._packer(parts, shape)
            if packer is not False:
                pack, head, middle, tail = packer
                # The ids big-endian (to_bytes' default order), the times little-endian (the struct), tags as
                # little-endian ints.
                if parent is None:
                    return pack(head, context[0].to_bytes(16), 0x0812, context[1].to_bytes(8), parts[0], 0x39, start,
                                0x41, end_ns, middle, request_id, tail)
                return pack(head, context[0].to_bytes(16), 0x0812, context[1].to_bytes(8), 0x0822,
                            parent[1].to_bytes(8), parts[0], 0x39, start, 0x41, end_ns, middle, request_id, tail)
        name_kind, tail_tags, status = parts[0], parts[1], parts[2]
        tags = self.static + string_field(_REQUEST_ID, hop.request_id) + tail_tags
        return encode_span(context, parent, name_kind, b"", start, end_ns, tags, status)

    def _packer(self, parts: _Parts, shape: int) -> _Packer | Literal[False]:
        """The struct packing this hop's span for a request id of `shape >> 2` bytes and a parent of kind
        `shape & 3` (0: a root, 1: local, 2: remote), with the constant bytes around its fields; False when such a
        span takes `encode_span` (a request id or message past a one- or two-byte length)."""
        name_kind, tail_tags, status, size, packers = parts
        n, remote = shape >> 2, (None, False, True)[shape & 3]
        size += n if remote is None else n + 10
        packer: _Packer | Literal[False] = False
        if n < _REQUEST_ID_MAX and 0x80 <= size < 0x4000:
            # ScopeSpans.spans' tag and two-byte length, then Span.trace_id's tag and length.
            head = bytes((0x12, (size & 0x7F) | 0x80, size >> 7, 0x0A, 0x10))
            middle = self.static + bytes((0x4A, n + _REQUEST_ID_KV)) + _REQUEST_ID + bytes((0x12, n + 2, 0x0A, n))
            tail = tail_tags + status + (FLAGS_REMOTE if remote else FLAGS_LOCAL)
            # trace id, span_id's tag and length (0x12 0x08) and id, [parent_span_id's (0x22 0x08) and id], ...
            ids = "16sH8s" if remote is None else "16sH8sH8s"
            layout = f"<5s{ids}{len(name_kind)}sBQBQ{len(middle)}s{n}s{len(tail)}s"
            packer = (struct.Struct(layout).pack, head, middle, tail)
        if len(packers) >= 8:
            packers.clear()
        packers[shape] = packer
        return packer

    def _parts(self, span_name: str, hop: Hop) -> _Parts:
        """`encode`'s cached parts of a hop: the name and kind fields, the tags after the request id (from the
        fragment caches), the status field, the message size without the parent and the request id's bytes, and
        the packers `_packer` makes for it (by the request id's length and the parent's kind)."""
        name = self._names.get(span_name)
        if name is None:
            name = self._remember(self._names, span_name, name_field(span_name))
        key = (hop.scheme, hop.authority, hop.path)
        url = self._urls.get(key)
        if url is None:
            url = self._remember(self._urls, key, self._url(*key))
        client_key = (hop.method, hop.protocol, hop.user_agent)
        client = self._clients.get(client_key)
        if client is None:
            client = self._remember(self._clients, client_key, self._client(*client_key))
        peer = self._peers.get(hop.downstream_address)
        if peer is None:
            peer = self._remember(self._peers, hop.downstream_address, self._peer(hop.downstream_address))
        outcome_key = (hop.request_bytes, hop.response_bytes, hop.upstream_cluster, hop.upstream_address,
                       hop.status, hop.response_flags, hop.method, hop.protocol, hop.authority)
        outcome = self._outcomes.get(outcome_key)
        if outcome is None:
            outcome = self._remember(self._outcomes, outcome_key, self._outcome(hop))
        if self.inbound:
            tail = b"".join((url[0], client[0], peer[0], outcome[0], url[1], peer[1], client[1], outcome[1]))
        else:
            tail = b"".join((url[0], client[0], peer[0], outcome[0], url[1], outcome[1]))
        name_kind = name + self.kind
        # The Span message's size but for the parent and the request id's bytes: both ids, name and kind, both
        # times, the tags (the request id's field without its value), the status and the flags fields.
        size = (28 + len(name_kind) + 18 + len(self.static) + _REQUEST_ID_KV + 2 + len(tail) + len(outcome[2])
                + len(FLAGS_LOCAL))
        return name_kind, tail, outcome[2], size, {}

    def _remember(self, cache: dict[Any, _T], key: object, value: _T) -> _T:
        if len(cache) >= self.CACHED:
            cache.clear()
        cache[key] = value
        return value

    def _url(self, scheme: str, authority: str, path: str) -> tuple[bytes, bytes]:
        url = f"{scheme}://{authority}{path}"
        if not self.inbound:
            return _field("http.url", url), _field("url.full", url)
        target, _, query = path.partition("?")
        tail = _field("url.path", target) + _field("url.scheme", scheme)
        return _field("http.url", url), tail + _field("url.query", query) if query else tail

    def _client(self, method: str, protocol: str, user_agent: str) -> tuple[bytes, bytes]:
        head = _field("http.method", method) + _field("http.protocol", protocol) + _field("user_agent", user_agent)
        return head, _field("user_agent.original", user_agent) if self.inbound and user_agent else b""

    def _peer(self, address: str) -> tuple[bytes, bytes]:
        return _field("peer.address", address), _field("client.address", address.rpartition(":")[0])

    def _outcome(self, hop: Hop) -> tuple[bytes, bytes, bytes]:
        """(tags before the URL's, error tags, status field), from the sizes' tags and the rest's, each cached on
        its own: a route whose response sizes vary still finds the rest (most of the work) encoded."""
        sizes_key = (hop.request_bytes, hop.response_bytes)
        sizes = self._sizes.get(sizes_key)
        if sizes is None:
            sizes = self._remember(self._sizes, sizes_key, _field("request_size", hop.request_bytes)
                                   + _field("response_size", hop.response_bytes))
        rest_key = (hop.upstream_cluster, hop.upstream_address, hop.status, hop.response_flags, hop.method,
                    hop.protocol, hop.authority)
        rest = self._rests.get(rest_key)
        if rest is None:
            rest = self._remember(self._rests, rest_key, self._rest(hop))
        return sizes + rest[0], rest[1], rest[2]

    def _rest(self, hop: Hop) -> tuple[bytes, bytes, bytes]:
        status, flags, protocol = hop.status, hop.response_flags, hop.protocol
        host, port = self._authority(hop.authority)
        parts = [_field("upstream_cluster", hop.upstream_cluster), _field("upstream_address", hop.upstream_address),
                 _field("http.status_code", status), _field("response_flags", flags),
                 _field("http.request.method", hop.method),
                 _field("network.protocol.version", protocol_version(protocol)),
                 _field("server.address", host)]
        if port is not None:
            parts.append(_field("server.port", port))
        if status:
            parts.append(_field("http.response.status_code", status))
        error = hop_error(status, flags, self.inbound)
        if error is not None:
            error_type, description = error
            return (b"".join(parts), _field("error", True) + _field("error.type", error_type),
                    status_field(StatusCode.ERROR, description))
        return b"".join(parts), b"", _UNSET
