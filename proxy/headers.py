"""Header names the proxy treats specially, and the hop-by-hop filter applied on both directions.

Headers travel as a list of `(lowercase name, value)` byte pairs from the codec to the wire: no dicts to
rebuild, no decoding on the hot path, and duplicates (e.g. several `set-cookie`) keep their order.
"""

from __future__ import annotations

__all__ = [
    "HOP_BY_HOP",
    "TRACE_HEADERS",
    "Headers",
    "connection_tokens",
    "drop_set",
    "filter_headers",
]

Headers = list[tuple[bytes, bytes]]

# RFC 9110 section 7.6.1 plus the legacy proxy headers: they describe one connection, never the next one.
# Transfer-Encoding is here because the proxy re-frames every body itself; Content-Length is end-to-end.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
    b"proxy-authorization", b"proxy-authenticate",
})

# Every trace header any supported format reads: dropped before the proxy injects its own span, so a stale
# header of another format can never win the precedence race at the next hop (REFERENCE.md section 1).
TRACE_HEADERS = frozenset({
    b"traceparent", b"tracestate", b"b3", b"x-b3-traceid", b"x-b3-spanid", b"x-b3-parentspanid",
    b"x-b3-sampled", b"x-b3-flags", b"uber-trace-id", b"ot-tracer-traceid", b"ot-tracer-spanid",
    b"ot-tracer-sampled", b"x-ot-span-context",
})


def connection_tokens(value: bytes) -> frozenset[bytes]:
    """The header names listed in a `Connection` value (`close`/`keep-alive`/`upgrade` included)."""
    return frozenset(token.strip().lower() for token in value.split(b",") if token.strip())


def drop_set(base: frozenset[bytes], connection: bytes | None) -> frozenset[bytes]:
    """Names to strip: the static set plus any header the sender marked hop-by-hop in `Connection`."""
    if not connection:
        return base
    return base | connection_tokens(connection)


def filter_headers(headers: Headers, drop: frozenset[bytes]) -> Headers:
    """A new list without the dropped names; the input is never modified."""
    return [pair for pair in headers if pair[0] not in drop]
