"""HTTP/1.1 framing on httptools: request and response parsers that stream, plus the head encoders.

Theory of operation. httptools (llhttp) calls back synchronously from inside `feed_data`; the codecs collect a
head, check what llhttp lets through (Host rules, header limits, Transfer-Encoding on HTTP/1.0, trailers), and
hand the caller three events: head, body chunk, end. A check that fails raises `ProtocolError` from inside a
callback, which llhttp reports as a callback error; `feed` unwraps it, so the caller sees one exception type
carrying the status to answer (400, 431...). llhttp already refuses CL+TE, duplicate or invalid
Content-Length, obs-fold, bad chunk sizes and control characters in names and values (see tests).
Header names are lower-cased once here: HTTP/1 names are case-insensitive and every later lookup is cheaper.

Per header, the only Python work is the `on_header` callback appending the lower-cased pair; the rest is done once
the head is complete. The last value of each name is `dict(headers)`, and a length differing from the list's is the
only sign of a repeated name, so repeated Hosts and Connection values are looked for only then. The size limits
(header count; bytes of target, names and values plus 4 per header) need no counting for a head that arrived in one
read too small to exceed them; a bigger read, or a head spread over reads, is counted exactly, and a head still
incomplete at the end of a read is counted there too, so one that never ends cannot grow past the limits by more
than a read. Trailers are dropped in `on_header` (the head is complete by then). The request's HTTP version is read
from the bytes of the read when the head started that read (httptools' version getter formats a string each time);
any other head asks httptools.
"""

from __future__ import annotations

from http import HTTPStatus
from itertools import chain
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
    "header_lines",
]

MAX_HEADER_BYTES = 60 * 1024       # Envoy's default max_request_headers_kb
MAX_HEADERS = 100                  # Envoy's default max_headers_count

_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
_VERSIONS = {"1.1": b"1.1", "1.0": b"1.0"}      # httptools' version strings, as bytes without an encode()
_STATUS_LINES: dict[int, bytes] = {}
# The end of a request line after its target, as the bytes of the read it came in show it.
_LINE_ENDS = {b" HTTP/1.1\r\n": b"1.1", b" HTTP/1.0\r\n": b"1.0"}


def _head_size(headers: Headers) -> int:
    """Header bytes as the limits count them: each name and value plus 4 (": " and CRLF)."""
    return sum(map(len, chain.from_iterable(headers))) + 4 * len(headers)


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
        # `in` before a look-up: most requests carry neither header.
        self.content_length = int(hmap[b"content-length"]) if b"content-length" in hmap else None
        self.expect_continue = b"expect" in hmap and hmap[b"expect"].lower() == b"100-continue"

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


class ResponseHead:
    """A parsed response head from an upstream.

    No HTTP version: the proxy answers in HTTP/1.1 whatever the upstream spoke, llhttp's `keep_alive` already
    accounts for it, and asking httptools for it formats a string (about 3k instructions per response).
    """

    __slots__ = ("chunked", "connection", "content_length", "headers", "hmap", "keep_alive", "status")

    def __init__(self, status: int, headers: Headers, keep_alive: bool,  # noqa: PLR0917  (by position: see RequestHead)
                 chunked: bool, content_length: bytes | None, connection: bytes | None = None,
                 hmap: dict[bytes, bytes] | None = None) -> None:
        self.status = status
        self.connection = connection    # the Connection value(s), comma-joined; None without one
        self.headers = headers
        self.keep_alive = keep_alive
        self.chunked = chunked
        self.content_length = content_length
        self.hmap = dict(headers) if hmap is None else hmap     # last value of each name, for lookups only


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

    __slots__ = ("_between", "_data", "_headers", "_parser", "_spanning", "_url", "_window", "max_header_bytes",
                 "max_headers", "sink", "started")

    def __init__(self, sink: RequestSink, *, max_header_bytes: int = MAX_HEADER_BYTES,
                 max_headers: int = MAX_HEADERS) -> None:
        self.sink = sink
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self._parser = httptools.HttpRequestParser(self)
        self._headers: Headers = []
        self._url = b""
        self._window = 0                # bytes of the read being parsed
        self._spanning = False          # the head in progress began in an earlier read
        self._between = True            # the last request ended where a read did: the next read starts a head
        self._data: bytes | None = None     # that read, until its first head is complete
        self.started = False            # bytes of a request head have arrived (for 408 vs idle close)

    def feed(self, data: bytes) -> int | None:
        """Parse `data`; returns the offset where raw (upgraded) bytes start, else None. Raises ProtocolError."""
        self._window = len(data)
        if self._between:
            self._data = data
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            return int(upgrade.args[0])
        except httptools.HttpParserError as exc:
            raise _unwrap(exc, 400) from exc
        finally:
            self._data = None
        if self.started:
            # A head continues in the next read: what it has so far must already be within the limits.
            self._spanning = True
            self._check_size(self._headers)
        return None

    def _check_size(self, headers: Headers) -> None:
        if len(headers) > self.max_headers or len(self._url) + _head_size(headers) > self.max_header_bytes:
            raise ProtocolError(431, "request headers too large")

    # -- httptools callbacks -------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._headers = []
        self._url = b""
        self._spanning = False
        self._between = False
        self.started = True

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # Not started: a trailer, after the head was complete. Forgotten: `Trailer` is hop-by-hop, and the proxy
        # re-frames bodies itself; kept, a client could grow it without bound.
        if self.started:
            self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        headers = self._headers
        # A head that arrived within one read of `_window` bytes counts at most that many plus one per header
        # (`name:value` with no space takes 3 bytes besides name and value, the limit counts 4).
        count = len(headers)
        if self._spanning or count > self.max_headers or self._window + count > self.max_header_bytes:
            self._check_size(headers)
        # Compiled, a comprehension is a native loop; dict(list) a generic call (3k instructions for 5 headers).
        hmap = {name: value for name, value in headers}  # noqa: C416  (see above)
        if len(hmap) != len(headers) and b"host" in hmap and [name for name, _ in headers].count(b"host") > 1:
            raise ProtocolError(400, "multiple Host headers")
        parser = self._parser
        url = self._url
        method = parser.get_method()
        version = None
        data = self._data
        if data is not None:
            self._data = None
            # The head started the read: its request line is `method SP url SP HTTP/1.x CRLF` from offset 0. Had
            # llhttp skipped empty lines first, these 11 bytes would end in a CRLF before the request line's own,
            # inside it or the empty lines, and could never read ` HTTP/1.x` CRLF.
            at = len(method) + len(url) + 1
            version = _LINE_ENDS.get(data[at:at + 11])
        if version is None:
            version = _VERSIONS.get(parser.get_http_version()) or parser.get_http_version().encode()
        if version == b"1.1" and b"host" not in hmap:
            raise ProtocolError(400, "missing Host header")
        if version != b"1.1" and b"transfer-encoding" in hmap:
            raise ProtocolError(400, "Transfer-Encoding is not allowed in HTTP/1.0")
        if url[:1] != b"/" and not (url.startswith(b"http://") or url.startswith(b"https://")
                                    or (url == b"*" and method == b"OPTIONS") or method == b"CONNECT"):
            raise ProtocolError(400, "invalid request target")
        self.started = False
        # llhttp marks an upgrade only for CONNECT or with an Upgrade header: ask it only then.
        upgrade = (b"upgrade" in hmap or method == b"CONNECT") and parser.should_upgrade()
        head = RequestHead(method, url, version, headers, hmap, parser.should_keep_alive(), upgrade)
        self.sink.on_request_head(head)

    def on_body(self, body: bytes) -> None:
        self.sink.on_request_body(body)

    def on_message_complete(self) -> None:
        self._between = True
        self.sink.on_request_end()


class _StopParsing(Exception):
    """Raised from a callback to stop llhttp after a head whose body it would wrongly wait for (HEAD)."""


class ResponseCodec:
    """Parses the responses of one upstream connection, one at a time, and feeds the current sink.

    1xx interim responses are swallowed (the proxy answers `Expect: 100-continue` itself). A response to
    HEAD has no body whatever its Content-Length says; llhttp cannot be told so, hence `_StopParsing`.
    A response without Content-Length or chunking ends when the connection does: `close_delimited`.
    """

    __slots__ = ("_headers", "_in_body", "_in_head", "_interim", "_parser", "_spanning", "_window", "close_delimited",
                 "head_request", "sink")

    def __init__(self, sink: ResponseSink) -> None:
        self.sink = sink
        self._parser = httptools.HttpResponseParser(self)
        self._headers: Headers = []
        self._window = 0                # bytes of the read being parsed
        self._in_head = False           # a head has begun and is not complete
        self._in_body = False           # a head is complete, its message is not
        self._spanning = False          # the head in progress began in an earlier read
        self._interim = False
        self.head_request = False
        self.close_delimited = False

    def feed(self, data: bytes) -> int | None:
        """Parse `data`; returns the offset of raw bytes after a 101, else None. Raises ProtocolError (502)."""
        self._window = len(data)
        if not self._in_head:
            self._in_head = not self._in_body   # between responses: these bytes start the next head
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            return int(upgrade.args[0])
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _StopParsing):
                # Whatever follows a HEAD response on this connection is garbage; start clean next time.
                self._parser = httptools.HttpResponseParser(self)
                self._in_head = self._spanning = False
                return None
            raise _unwrap(exc, 502) from exc
        if self._in_head or self._headers:
            # A head continues in the next read: what it has so far must already be within the limit.
            self._spanning = True
            _check_response_size(self._headers)
        return None

    # No on_message_begin: httptools skips callbacks a protocol does not define, and each one it makes costs a
    # Python call per response. The head's list is made afresh where a message ends instead.

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_body:           # in the body: a trailer, forgotten (see RequestCodec.on_header)
            self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        headers = self._headers
        # Within one read of `_window` bytes a head counts at most that many plus one per header (`name:value`
        # takes 3 bytes besides name and value, the limit counts 4): only a bigger one is counted exactly.
        if self._spanning or self._window + len(headers) > MAX_HEADER_BYTES:
            _check_response_size(headers)
        self._in_head = self._spanning = False
        if status < 200:
            # 1xx: interim, swallowed; a 101's "message complete" is not the end of anything either,
            # the bytes after it belong to the tunnel.
            self._headers = []
            self._interim = True
            if status != 101:
                return
        self._headers = []              # empty while the body lasts: `feed` reads a non-empty list as a head begun
        self._in_body = True
        # Compiled, a comprehension is a native loop; dict(list) a generic call (3k instructions for 5 headers).
        hmap = {name: value for name, value in headers}  # noqa: C416  (see above)
        if len(hmap) == len(headers):
            length = hmap.get(b"content-length")
            chunked = b"transfer-encoding" in hmap
            connection = hmap.get(b"connection")
        else:                           # a name repeats: Connection values add up
            chunked = False
            length = connection = None
            for name, value in headers:
                if name == b"content-length":
                    length = value
                elif name == b"transfer-encoding":
                    chunked = True
                elif name == b"connection":
                    connection = value if connection is None else connection + b"," + value
        no_body = self.head_request or status in (204, 304) or status == 101
        self.close_delimited = not (no_body or chunked or length is not None)
        head = ResponseHead(status, headers, parser.should_keep_alive(), chunked, length, connection, hmap)
        self.sink.on_response_head(head)
        if self.head_request:
            self._headers = []
            self._in_body = False
            self.sink.on_response_end()
            raise _StopParsing

    def on_body(self, body: bytes) -> None:
        self.sink.on_response_body(body)

    def on_message_complete(self) -> None:
        self._headers = []
        self._in_body = False
        if self._interim:
            self._interim = False
            return
        self.close_delimited = False
        self.sink.on_response_end()


def _check_response_size(headers: Headers) -> None:
    if _head_size(headers) > MAX_HEADER_BYTES:
        raise ProtocolError(502, "upstream response headers too large")


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))
        _STATUS_LINES[status] = line
    return line


def _append_lines(parts: list[bytes], headers: Headers) -> None:
    """`name: value` CRLF for each header, appended to `parts` piece by piece: compiled, a native loop feeding one
    join at the end (a join of `map(b": ".join, headers)` took about 4k instructions for five headers)."""
    for name, value in headers:
        parts.append(name)
        parts.append(b": ")
        parts.append(value)
        parts.append(b"\r\n")


def encode_response_head(status: int, headers: Headers) -> bytes:
    """`HTTP/1.1 <status> <reason>` and the headers, ready for `transport.write`."""
    line = _STATUS_LINES.get(status)        # _status_line's cache read inline: one call fewer per response
    if line is None:
        line = _status_line(status)
    parts = [line]
    _append_lines(parts, headers)
    parts.append(b"\r\n")
    return b"".join(parts)


def header_lines(headers: Headers) -> bytes:
    """`headers` as lines of a header block (`name: value` CRLF each), for `encode_request_head`'s `block`."""
    parts: list[bytes] = []
    _append_lines(parts, headers)
    return b"".join(parts)


def encode_request_head(method: bytes, target: bytes, headers: Headers, block: bytes = b"") -> bytes:
    """The request line and `headers`, then `block`: header lines already encoded (`name: value` CRLF each, the
    trace headers as meshtrace.propagation renders them), which cost no join per header."""
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    _append_lines(parts, headers)
    parts.append(block)
    parts.append(b"\r\n")
    return b"".join(parts)
