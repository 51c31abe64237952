"""HTTP/1.1 framing on httptools: request and response parsers that stream, plus the head encoders.

Theory of operation. httptools (llhttp) calls back synchronously from inside `feed_data`; the codecs collect a
head, check what llhttp lets through (Host rules, header limits, Transfer-Encoding on HTTP/1.0, trailers), and
hand the caller three events: head, body chunk, end. A check that fails raises `ProtocolError` from inside a
callback, which llhttp reports as a callback error; `feed` unwraps it, so the caller sees one exception type
carrying the status to answer (400, 431...). llhttp already refuses CL+TE, duplicate or invalid
Content-Length, obs-fold, bad chunk sizes and control characters in names and values (see tests).
Header names are lower-cased once here: HTTP/1 names are case-insensitive and every later lookup is cheaper.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Protocol

import httptools

from .errors import ProtocolError
from .headers import Headers

__all__ = [
    "RequestCodec",
    "RequestHead",
    "RequestSink",
    "ResponseCodec",
    "ResponseHead",
    "ResponseSink",
    "encode_request_head",
    "encode_response_head",
]

MAX_HEADER_BYTES = 60 * 1024       # Envoy's default max_request_headers_kb
MAX_HEADERS = 100                  # Envoy's default max_headers_count

_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
_VERSIONS = {"1.1": b"1.1", "1.0": b"1.0"}      # httptools' version strings, as bytes without an encode()
_STATUS_LINES: dict[int, bytes] = {}


class RequestHead:
    """A parsed request head; `headers` hold lower-case names and arrive in wire order."""

    __slots__ = ("chunked", "content_length", "expect_continue", "headers", "hmap", "keep_alive", "method",
                 "target", "upgrade", "version")

    # Not keyword-only: the codec calls by position (each keyword costs a few hundred instructions per request).
    def __init__(self, method: bytes, target: bytes, version: bytes, headers: Headers,  # noqa: PLR0917
                 hmap: dict[bytes, bytes], keep_alive: bool, upgrade: bool) -> None:
        self.method = method
        self.target = target
        self.version = version          # b"1.1" or b"1.0"
        self.headers = headers
        self.hmap = hmap                # last value of each name: for lookups only, never for forwarding
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.chunked = b"transfer-encoding" in hmap
        cl = hmap.get(b"content-length")
        self.content_length = int(cl) if cl is not None else None
        expect = hmap.get(b"expect")
        self.expect_continue = expect is not None and expect.lower() == b"100-continue"

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


class ResponseHead:
    """A parsed response head from an upstream.

    No HTTP version: the proxy answers in HTTP/1.1 whatever the upstream spoke, llhttp's `keep_alive` already
    accounts for it, and asking httptools for it formats a string (about 3k instructions per response).
    """

    __slots__ = ("chunked", "connection", "content_length", "headers", "keep_alive", "status")

    def __init__(self, status: int, headers: Headers, keep_alive: bool,  # noqa: PLR0917  (by position: see RequestHead)
                 chunked: bool, content_length: bytes | None, connection: bytes | None = None) -> None:
        self.status = status
        self.connection = connection    # the Connection value(s), comma-joined; None without one
        self.headers = headers
        self.keep_alive = keep_alive
        self.chunked = chunked
        self.content_length = content_length


class RequestSink(Protocol):
    def on_request_head(self, head: RequestHead) -> None: ...
    def on_request_body(self, data: bytes) -> None: ...
    def on_request_end(self) -> None: ...


class ResponseSink(Protocol):
    def on_response_head(self, head: ResponseHead) -> None: ...
    def on_response_body(self, data: bytes) -> None: ...
    def on_response_end(self) -> None: ...


def _unwrap(exc: Exception, fallback_status: int) -> ProtocolError:
    """Turn an httptools error into the ProtocolError to answer with (a callback's own error wins)."""
    inner = exc.__context__
    if isinstance(inner, ProtocolError):
        return inner
    if isinstance(exc, httptools.HttpParserCallbackError) and inner is not None:
        # A bug in a sink must still end as a clean reply, never a stack trace on the wire.
        return ProtocolError(500, f"internal error while handling the request: {type(inner).__name__}")
    return ProtocolError(fallback_status, str(exc) or type(exc).__name__)


class RequestCodec:
    """Parses a stream of pipelined requests from one downstream connection and feeds `sink`."""

    __slots__ = ("_headers", "_hmap", "_in_body", "_parser", "_size", "_url", "max_header_bytes",
                 "max_headers", "sink", "started")

    def __init__(self, sink: RequestSink, *, max_header_bytes: int = MAX_HEADER_BYTES,
                 max_headers: int = MAX_HEADERS) -> None:
        self.sink = sink
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self._parser = httptools.HttpRequestParser(self)
        self._headers: Headers = []
        self._hmap: dict[bytes, bytes] = {}
        self._url = b""
        self._size = 0
        self._in_body = False
        self.started = False            # bytes of a request head have arrived (for 408 vs idle close)

    def feed(self, data: bytes) -> int | None:
        """Parse `data`; returns the offset where raw (upgraded) bytes start, else None. Raises ProtocolError."""
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            return int(upgrade.args[0])
        except httptools.HttpParserError as exc:
            raise _unwrap(exc, 400) from exc
        return None

    # -- httptools callbacks -------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._headers = []
        self._hmap = {}
        self._url = b""
        self._size = 0
        self._in_body = False
        self.started = True

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._size += len(url)
        if self._size > self.max_header_bytes:
            raise ProtocolError(431, "request headers too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_body:
            return                      # trailers: dropped, since `Trailer` is hop-by-hop and stripped too
        self._size += len(name) + len(value) + 4
        if self._size > self.max_header_bytes or len(self._headers) >= self.max_headers:
            raise ProtocolError(431, "request headers too large")
        name = name.lower()
        if name == b"host" and b"host" in self._hmap:
            raise ProtocolError(400, "multiple Host headers")
        self._headers.append((name, value))
        self._hmap[name] = value

    def on_headers_complete(self) -> None:
        parser = self._parser
        version = _VERSIONS.get(parser.get_http_version()) or parser.get_http_version().encode()
        hmap = self._hmap
        if version == b"1.1" and b"host" not in hmap:
            raise ProtocolError(400, "missing Host header")
        if version != b"1.1" and b"transfer-encoding" in hmap:
            raise ProtocolError(400, "Transfer-Encoding is not allowed in HTTP/1.0")
        url = self._url
        method = parser.get_method()
        if not (url.startswith(b"/") or url.startswith(b"http://") or url.startswith(b"https://")
                or (url == b"*" and method == b"OPTIONS") or method == b"CONNECT"):
            raise ProtocolError(400, "invalid request target")
        self._in_body = True
        self.started = False
        # llhttp marks an upgrade only for CONNECT or with an Upgrade header: ask it only then.
        upgrade = (b"upgrade" in hmap or method == b"CONNECT") and parser.should_upgrade()
        self.sink.on_request_head(RequestHead(
            method, url, version, self._headers, hmap, parser.should_keep_alive(), upgrade))

    def on_body(self, body: bytes) -> None:
        self.sink.on_request_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        self.sink.on_request_end()


class _StopParsing(Exception):
    """Raised from a callback to stop llhttp after a head whose body it would wrongly wait for (HEAD)."""


class ResponseCodec:
    """Parses the responses of one upstream connection, one at a time, and feeds the current sink.

    1xx interim responses are swallowed (the proxy answers `Expect: 100-continue` itself). A response to
    HEAD has no body whatever its Content-Length says; llhttp cannot be told so, hence `_StopParsing`.
    A response without Content-Length or chunking ends when the connection does: `close_delimited`.
    """

    __slots__ = ("_headers", "_in_body", "_interim", "_parser", "_size", "close_delimited", "head_request",
                 "sink")

    def __init__(self, sink: ResponseSink) -> None:
        self.sink = sink
        self._parser = httptools.HttpResponseParser(self)
        self._headers: Headers = []
        self._size = 0
        self._in_body = False
        self._interim = False
        self.head_request = False
        self.close_delimited = False

    def feed(self, data: bytes) -> int | None:
        """Parse `data`; returns the offset of raw bytes after a 101, else None. Raises ProtocolError (502)."""
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            return int(upgrade.args[0])
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _StopParsing):
                # Whatever follows a HEAD response on this connection is garbage; start clean next time.
                self._parser = httptools.HttpResponseParser(self)
                return None
            raise _unwrap(exc, 502) from exc
        return None

    # No on_message_begin: httptools skips callbacks a protocol does not define, and each one it makes costs a
    # Python call per response. The head's state is reset where a head ends instead (on_headers_complete).

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_body:
            return
        self._size += len(name) + len(value) + 4
        if self._size > MAX_HEADER_BYTES:
            raise ProtocolError(502, "upstream response headers too large")
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        headers = self._headers
        self._headers = []              # the next head starts afresh
        self._size = 0
        if status < 200:
            # 1xx: interim, swallowed; a 101's "message complete" is not the end of anything either,
            # the bytes after it belong to the tunnel.
            self._interim = True
            if status != 101:
                return
        self._in_body = True
        chunked = False
        length: bytes | None = None
        connection: bytes | None = None
        for name, value in headers:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"connection":
                connection = value if connection is None else connection + b"," + value
        no_body = self.head_request or status in (204, 304) or status == 101
        self.close_delimited = not (no_body or chunked or length is not None)
        self.sink.on_response_head(ResponseHead(
            status, headers, parser.should_keep_alive(), chunked, length, connection))
        if self.head_request:
            self._in_body = False
            self.sink.on_response_end()
            raise _StopParsing

    def on_body(self, body: bytes) -> None:
        self.sink.on_response_body(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._in_body = False
        self.close_delimited = False
        self.sink.on_response_end()


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))
        _STATUS_LINES[status] = line
    return line


_JOIN_PAIR = b": ".join     # a (name, value) pair -> b"name: value", in C


def encode_response_head(status: int, headers: Headers) -> bytes:
    """`HTTP/1.1 <status> <reason>` and the headers, ready for `transport.write`."""
    if not headers:
        return _status_line(status) + b"\r\n"
    return b"%s%s\r\n\r\n" % (_status_line(status), b"\r\n".join(map(_JOIN_PAIR, headers)))


def encode_request_head(method: bytes, target: bytes, headers: Headers) -> bytes:
    if not headers:
        return b"%s %s HTTP/1.1\r\n\r\n" % (method, target)
    return b"%s %s HTTP/1.1\r\n%s\r\n\r\n" % (method, target, b"\r\n".join(map(_JOIN_PAIR, headers)))
