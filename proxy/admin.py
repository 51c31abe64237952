"""The sidecar's admin endpoints (/metrics, /ready, /healthz, /config_dump, /stats) on a small asyncio server.

It serves only GET and HEAD with no request body, so a minimal parser over asyncio streams is enough: read the
head up to a blank line (bounded size and time), answer, keep the connection alive for the next scrape.
Every data source is a callable handed in by the proxy; a callable that raises becomes a 500 (or a 503 for
/ready), never a dead admin port. It binds 127.0.0.1 unless told otherwise, like Envoy's admin and
Istio's 15000.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

__all__ = ["AdminServer"]

_log = logging.getLogger("meshtrace.proxy.admin")

METRICS_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
_TEXT: Final = "text/plain; charset=utf-8"
_JSON: Final = "application/json"
MAX_HEAD_BYTES: Final = 16 * 1024
HEAD_TIMEOUT: Final = 10.0             # seconds to send a request head; also the keep-alive idle limit

_ENDPOINTS: Final[dict[str, str]] = {
    "/metrics": "Prometheus metrics (Istio standard metrics), text format 0.0.4",
    "/stats/prometheus": "same as /metrics (Envoy's path)",
    "/ready": "200 LIVE when ready to serve, 503 while starting or draining",
    "/healthz": "200 while the process is up",
    "/config_dump": "the running configuration as JSON",
    "/stats": "Envoy-style counters, `name: value` lines (?format=json for JSON)",
}
_REASONS: Final = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                   408: "Request Timeout", 413: "Content Too Large", 431: "Request Header Fields Too Large",
                   500: "Internal Server Error", 503: "Service Unavailable"}


class _Reply:
    __slots__ = ("body", "content_type", "extra", "status")

    def __init__(self, status: int, body: str, content_type: str = _TEXT,
                 extra: tuple[tuple[str, str], ...] = ()) -> None:
        self.status = status
        self.body = body.encode("utf-8")
        self.content_type = content_type
        self.extra = extra


class AdminServer:
    """An HTTP/1.1 admin server; `await start()`, then `port` tells where it listens."""

    def __init__(self, host: str = "127.0.0.1", port: int = 15000, *, metrics: Callable[[], str],
                 ready: Callable[[], bool], config_dump: Callable[[], Mapping[str, Any]],
                 stats: Callable[[], Mapping[str, int]]) -> None:
        self._host = host
        self._requested_port = port
        self._metrics = metrics
        self._ready = ready
        self._config_dump = config_dump
        self._stats = stats
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._routes: dict[str, Callable[[str], _Reply]] = {
            "/metrics": self._get_metrics,
            "/stats/prometheus": self._get_metrics,
            "/ready": self._get_ready,
            "/healthz": lambda _query: _Reply(200, "OK\n"),
            "/config_dump": self._get_config_dump,
            "/stats": self._get_stats,
        }

    @property
    def host(self) -> str:
        """The address actually bound (the requested one before start())."""
        if self._server is not None and self._server.sockets:
            return str(self._server.sockets[0].getsockname()[0])
        return self._host

    @property
    def port(self) -> int:
        """The port actually bound (useful when 0 was asked for); the requested one before start()."""
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self._requested_port

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._on_connection, self._host, self._requested_port, limit=MAX_HEAD_BYTES)

    async def close(self) -> None:
        """Stop listening and close the open admin connections."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # -- connection handling -------------------------------------------------------------------------------

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:  # tracked so that close() can end idle keep-alive connections
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)
        await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
                except asyncio.IncompleteReadError as exc:
                    if exc.partial.strip():
                        await self._send(writer, _Reply(400, "incomplete request\n"), keep_alive=False)
                    return
                except asyncio.LimitOverrunError:
                    await self._send(writer, _Reply(431, "request head too large\n"), keep_alive=False)
                    return
                except TimeoutError:
                    return
                reply, head_only, keep_alive = self._handle(head)
                await self._send(writer, reply, keep_alive=keep_alive, head_only=head_only)
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:  # the admin port must survive anything a client sends
            _log.exception("admin connection failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _handle(self, head: bytes) -> tuple[_Reply, bool, bool]:
        """(reply, is HEAD, keep the connection) for one request head."""
        try:
            text = head.decode("latin-1")
            request_line, *header_lines = text[:-4].split("\r\n")
            method, target, version = request_line.split(" ")
        except ValueError:
            return _Reply(400, "malformed request line\n"), False, False
        headers: dict[str, str] = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                return _Reply(400, "malformed header\n"), False, False
            headers[name.lower()] = value.strip()
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            return _Reply(400, "unsupported HTTP version\n"), False, False
        if headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in headers:
            # No endpoint takes a body; refusing it keeps the parser trivially in sync with the stream.
            return _Reply(413, "admin requests take no body\n"), False, False
        if method not in ("GET", "HEAD"):
            return _Reply(405, "only GET and HEAD\n", extra=(("Allow", "GET, HEAD"),)), False, keep_alive
        parts = urlsplit(target)
        handler = self._routes.get(parts.path.rstrip("/") or "/")
        if handler is None:
            return self._not_found(parts.path), method == "HEAD", keep_alive
        try:
            reply = handler(parts.query)
        except Exception as exc:
            _log.exception("admin endpoint %s failed", parts.path)
            reply = _Reply(500, f"{parts.path} failed: {type(exc).__name__}: {exc}\n")
        return reply, method == "HEAD", keep_alive

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, reply: _Reply, *, keep_alive: bool,
                    head_only: bool = False) -> None:
        lines = [
            f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Unknown')}",
            f"Content-Type: {reply.content_type}",
            f"Content-Length: {len(reply.body)}",
            "Cache-Control: no-cache, max-age=0",
            "X-Content-Type-Options: nosniff",
            *(f"{name}: {value}" for name, value in reply.extra),
        ]
        if not keep_alive:
            lines.append("Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(reply.body)
        await writer.drain()

    # -- endpoints -----------------------------------------------------------------------------------------

    def _get_metrics(self, _query: str) -> _Reply:
        return _Reply(200, self._metrics(), METRICS_CONTENT_TYPE)

    def _get_ready(self, _query: str) -> _Reply:
        try:
            ready = bool(self._ready())
        except Exception:
            _log.exception("readiness check failed")
            ready = False
        return _Reply(200, "LIVE\n") if ready else _Reply(503, "NOT_READY\n")

    def _get_config_dump(self, _query: str) -> _Reply:
        # default=str: a config may hold paths, enums or durations; a dump should show them, not fail.
        body = json.dumps(dict(self._config_dump()), indent=2, default=str)
        return _Reply(200, body + "\n", _JSON)

    def _get_stats(self, query: str) -> _Reply:
        stats = dict(self._stats())
        if parse_qs(query).get("format") == ["json"]:
            return _Reply(200, json.dumps({"stats": [{"name": k, "value": v} for k, v in sorted(stats.items())]},
                                          indent=2) + "\n", _JSON)
        return _Reply(200, "".join(f"{name}: {value}\n" for name, value in sorted(stats.items())))

    @staticmethod
    def _not_found(path: str) -> _Reply:
        width = max(map(len, _ENDPOINTS))
        listing = "".join(f"  {p.ljust(width)}  {what}\n" for p, what in _ENDPOINTS.items())
        shown = path if path.isprintable() and len(path) < 200 else "(unprintable path)"
        return _Reply(404, f"no admin endpoint at {shown}\nadmin commands are:\n{listing}")
