"""A lean HTTP/1.1 transport for the OTLP exporter: one kept-alive plain socket per exporter, no `requests`.

Theory of operation. OpenTelemetry's OTLP/HTTP client (`_OTLPHTTPClient`: compression, headers, retries with
backoff on 429/502/503/504 and on connection errors until the batch's deadline, the exporter's own metrics) sends
each batch through a transport; its default one is a `requests` Session, which for every POST merges session
settings, builds and prepares a Request, walks urllib3's pool and http.client, and parses the response headers
with the email package. The export thread holds the GIL for all of it, so the sidecar's event loop waits. This
transport keeps the client and replaces only that last step, for `http://` endpoints:

- one TCP connection per exporter (TCP_NODELAY), kept alive from batch to batch; before reuse a non-blocking
  peek tells whether the backend closed it meanwhile (then it is replaced, as urllib3 does), and any error or a
  response that does not say keep-alive closes it;
- the request head (method, target, Host, the client's headers) is built once per URL and header set; a POST is
  that head, the Content-Length and the body in one `sendmsg` (no copy of the body);
- the response is read as far as HTTP/1.1 framing needs (status line, headers into a case-insensitive mapping,
  a Content-Length, chunked or read-to-close body), so `Retry-After` and the status reach the client's retry rule
  as they did through `requests`;
- it connects to the endpoint's own host and port, never through `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY` (export
  traffic must not loop through the sidecar) and without reading `.netrc` or any other environment;
- fork(): a child (a pre-fork server's worker forked after the first export) inherits the parent's socket
  object, the very TCP connection the parent keeps using; were the child to write on it, the two processes'
  bytes would interleave on one stream and each could read the other's response. So a child never uses it: an
  at-fork hook gives the child a new lock (a parent thread may have held it at fork) and drops its copy of the
  socket (close() of the copy only releases the child's descriptor: the connection lives on in the parent,
  which is never shut down from here), and the owner's pid, checked at each request, catches a fork that ran no
  hooks (one made from C); the child connects anew at its first export;
- every socket or framing failure (refused, reset, timed out, malformed) is a result with an `OSError`, which
  `is_connection_error` says is one, so the client retries it exactly as it retries `requests`' connection errors.

No HTTP instrumentation sees these sockets (the integrations wrap requests, httpx and urllib), and the
GuardedExporter around the exporter sets OpenTelemetry's suppress keys anyway. `https://` endpoints, client
certificates and credential-provider sessions keep the `requests` transport (meshtrace.exporters.otlp picks).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.exporter.http.transport._base import BaseHTTPResult, BaseHTTPTransport

__all__ = ["DirectHTTPTransport", "ResponseError"]

_MAX_HEAD = 64 * 1024
_RECV = 65536
_NO_BODY = frozenset({204, 304})


class ResponseError(ConnectionError):
    """The backend's answer was not HTTP/1.x this transport can frame (an OSError: the client retries it)."""


class _Headers(dict[str, str]):
    """Response headers, lower-cased names; looked up case-insensitively (BaseHTTPResult.headers' contract)."""

    def get(self, key: str, default: Any = None) -> Any:
        return dict.get(self, key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, key.lower())


@dataclass(frozen=True, slots=True)
class DirectHTTPResult(BaseHTTPResult):
    """One request's outcome: status and reason with the response's headers and body, or the error."""

    response_headers: Mapping[str, str] = field(default_factory=_Headers)
    body: bytes = b""

    def content(self) -> bytes:
        return self.body

    def headers(self) -> Mapping[str, str]:
        return self.response_headers


class _Target:
    """What one URL's requests share: where to connect and the request head up to the Content-Length value."""

    __slots__ = ("address", "head", "key")

    def __init__(self, method: str, url: str, headers: Mapping[str, str]) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"DirectHTTPTransport sends to http:// URLs only, not {url!r}")
        port = parts.port or 80
        self.address = (parts.hostname, port)
        host = parts.netloc.rpartition("@")[2]   # userinfo is never sent in the Host header
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
        for raw_name, raw_value in headers.items():
            name, value = str(raw_name), str(raw_value)
            # A header from the environment must not be able to split the request (requests refuses these too).
            if any(c in name or c in value for c in "\r\n\0") or not name or ":" in name:
                raise ValueError(f"invalid OTLP header {name!r}")
            if name.lower() not in ("content-length", "host", "transfer-encoding"):
                lines.append(f"{name}: {value.strip()}")
        self.head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
        self.key = (method, url, tuple(headers.items()))


class DirectHTTPTransport(BaseHTTPTransport):
    """OpenTelemetry's HTTP transport interface over one kept-alive socket (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._address: tuple[str, int] | None = None
        self._target: _Target | None = None
        self._pid = os.getpid()   # the process the socket belongs to
        if hasattr(os, "register_at_fork"):
            weak_self = weakref.ref(self)

            def _after_fork_in_child() -> None:
                if (transport := weak_self()) is not None:
                    transport._lock = threading.Lock()
                    transport._forget_inherited()

            os.register_at_fork(after_in_child=_after_fork_in_child)

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        data: bytes | None = None,
    ) -> BaseHTTPResult:
        body = data or b""
        with self._lock:
            try:
                target = self._target
                if target is None or target.key != (method, url, tuple((headers or {}).items())):
                    target = self._target = _Target(method, url, headers or {})
            except ValueError as error:
                return DirectHTTPResult(error=error)
            if timeout is not None and timeout <= 0:
                return DirectHTTPResult(error=TimeoutError("export deadline reached"))
            try:
                return self._exchange(target, body, timeout)
            except OSError as error:
                self._drop()
                return DirectHTTPResult(error=error)

    def _forget_inherited(self) -> None:
        """In a forked child: the socket is the parent's connection. Close only this process's descriptor."""
        self._drop()
        self._pid = os.getpid()

    def _connection(self, target: _Target, timeout: float | None) -> socket.socket:
        if self._pid != os.getpid():   # forked without the at-fork hook running (a C-level fork)
            self._forget_inherited()
        sock = self._sock
        if sock is not None and self._address == target.address:
            # Readable while idle means the backend closed it (or sent something unasked): do not reuse it. A
            # non-blocking peek asks (select() would fail on a descriptor above FD_SETSIZE in a busy sidecar).
            # (With a timeout set, CPython would wait for readability first: the socket is non-blocking for it.)
            sock.settimeout(0)
            try:
                sock.recv(1, socket.MSG_PEEK)
                idle = False    # b"" (closed) or bytes nobody asked for
            except BlockingIOError:
                idle = True
            except OSError:
                idle = False
            if idle:
                sock.settimeout(timeout)
                return sock
        self._drop()
        sock = socket.create_connection(target.address, timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock, self._address = sock, target.address
        return sock

    def _exchange(self, target: _Target, body: bytes, timeout: float | None) -> DirectHTTPResult:
        sock = self._connection(target, timeout)
        head = target.head + b"%d\r\n\r\n" % len(body)
        sent = sock.sendmsg([head, body])
        total = len(head) + len(body)
        if sent < total:    # a large batch: the rest once the kernel takes it
            rest = memoryview(head + body)[sent:] if sent < len(head) else memoryview(body)[sent - len(head):]
            sock.sendall(rest)
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._response(sock, deadline)

    def _response(self, sock: socket.socket, deadline: float | None) -> DirectHTTPResult:
        reader = _Reader(sock, deadline)
        while True:
            line = reader.head()
            status_line, _, header_block = line.partition(b"\r\n")
            version, _, rest = status_line.partition(b" ")
            code_text, _, reason_bytes = rest.partition(b" ")
            if not version.startswith(b"HTTP/1.") or len(code_text) != 3 or not code_text.isdigit():
                raise ResponseError(f"not an HTTP/1.x response: {status_line[:80]!r}")
            status = int(code_text)
            headers = _Headers()
            for raw in header_block.split(b"\r\n"):
                if not raw:
                    continue
                name, sep, value = raw.partition(b":")
                if not sep:
                    raise ResponseError(f"malformed response header: {raw[:80]!r}")
                key, text = name.strip().decode("latin-1").lower(), value.strip().decode("latin-1")
                headers[key] = f"{headers.get(key)}, {text}" if key in headers else text
            if 100 <= status < 200:     # an interim response (101 would be a protocol switch: not ours)
                if status == 101:
                    raise ResponseError("unexpected 101 Switching Protocols")
                continue
            break
        length = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        keep = version != b"HTTP/1.0" and "close" not in headers.get("connection", "").lower()
        if status in _NO_BODY:
            body = b""
        elif chunked:
            body = reader.chunked()
        elif length is not None:
            if not length.isdigit():
                raise ResponseError(f"bad Content-Length: {length!r}")
            body = reader.exactly(int(length))
        else:
            body, keep = reader.until_close(), False
        if not keep or reader.pending:
            self._drop()
        return DirectHTTPResult(status_code=status, reason=reason_bytes.decode("latin-1"),
                                response_headers=headers, body=body)

    def _drop(self) -> None:
        sock, self._sock, self._address = self._sock, None, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def is_connection_error(self, exception: Exception | None) -> bool:
        return isinstance(exception, OSError)


class _Reader:
    """Buffered reads of one response from `sock`, none past `deadline` (time.monotonic)."""

    __slots__ = ("buffer", "deadline", "sock")

    def __init__(self, sock: socket.socket, deadline: float | None) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buffer = b""

    @property
    def pending(self) -> bool:
        """Bytes beyond the response arrived (a confused backend): the connection cannot be reused."""
        return bool(self.buffer)

    def _more(self) -> bytes:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out reading the export response")
            self.sock.settimeout(left)
        return self.sock.recv(_RECV)

    def _fill(self) -> None:
        data = self._more()
        if not data:
            raise ResponseError("the backend closed the connection mid-response")
        self.buffer += data

    def head(self) -> bytes:
        """The status line and headers, without the blank line that ends them."""
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
                return head
            if len(self.buffer) > _MAX_HEAD:
                raise ResponseError("response head too large")
            if not self.buffer:
                data = self._more()
                if not data:
                    raise ResponseError("the backend closed the connection without a response")
                self.buffer = data
            else:
                self._fill()

    def line(self) -> bytes:
        while True:
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                line, self.buffer = self.buffer[:end], self.buffer[end + 2:]
                return line
            if len(self.buffer) > _MAX_HEAD:
                raise ResponseError("chunk line too long")
            self._fill()

    def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_text = self.line().partition(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ResponseError(f"bad chunk size: {size_text[:20]!r}") from None
            if size == 0:
                while self.line():  # trailers, up to the blank line
                    pass
                return b"".join(parts)
            parts.append(self.exactly(size))
            if self.exactly(2) != b"\r\n":
                raise ResponseError("chunk not followed by CRLF")

    def until_close(self) -> bytes:
        parts = [self.buffer]
        self.buffer = b""
        while data := self._more():
            parts.append(data)
        return b"".join(parts)
