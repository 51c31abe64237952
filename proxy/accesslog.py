"""One access-log line per hop, in Envoy's default format or as JSON, written off the event loop.

Theory of operation: `on_hop` formats the line on the loop (the hop may be reused once observers return) and
appends it to a bounded deque; a daemon thread wakes every `flush_interval` (or early when the queue passes a
high-water mark), writes what has accumulated in one call and flushes. A slow or blocked stdout therefore
stalls only that thread: once the queue is full new lines are dropped and counted, never waited for. Write
errors are counted too; nothing here raises into the proxy.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from typing import IO, Final

from .hop import Hop

__all__ = ["ENVOY_DEFAULT_FORMAT", "AccessLog", "format_envoy", "format_json"]

# For reference: the line format_envoy() produces, as Envoy documents its default.
ENVOY_DEFAULT_FORMAT: Final = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" '
    '"%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"\n'
)


class _Clock:
    """START_TIME as Envoy prints it (2024-05-01T12:00:00.123Z); the strftime part is cached per second."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def iso(self, timestamp: float) -> str:
        # Scale first: `timestamp - int(timestamp)` loses the last digit (.123 -> 122.99...).
        second, millis = divmod(int(timestamp * 1000), 1000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return self._prefix + _MILLIS[millis]


# ".000Z" to ".999Z": compiled, an f-string's `{millis:03d}` is a str.format call (about 2k instructions a line).
_MILLIS = [f".{n:03d}Z" for n in range(1000)]


def _field(value: str) -> str:
    """A request-controlled value made safe for one log line: '-' when empty, control chars and '"' escaped."""
    if not value:
        return "-"
    if value.isprintable() and '"' not in value:
        return value
    # Rare path: the codec rejects control characters, but a log line must never be split or forged.
    return "".join(
        ch if ch.isprintable() and ch not in '"\\' else ("\\" + ch if ch in '"\\' else f"\\x{ord(ch):02x}")
        for ch in value
    )


def format_envoy(hop: Hop, clock: _Clock | None = None) -> str:
    """The hop as a line of Envoy's default access-log format (newline included).

    X-FORWARDED-FOR is always '-': the hop record does not carry request headers beyond those it names.
    """
    start = (clock or _Clock()).iso(hop.start_time)
    tcp = hop.protocol == "tcp"
    service_time = hop.upstream_service_time_ms
    return (
        f'[{start}] "{"-" if tcp else _field(hop.method)} {"-" if tcp else _field(hop.path)} '
        f'{"-" if tcp else hop.protocol}" {hop.status} {hop.response_flags or "-"} {hop.request_bytes} '
        f"{hop.response_bytes} {int(hop.duration_ms)} "
        f"{'-' if service_time is None else int(service_time)} "
        f'"-" "{_field(hop.user_agent)}" "{_field(hop.request_id)}" "{_field(hop.authority)}" '
        f'"{hop.upstream_address or "-"}"\n'
    )


def format_json(hop: Hop, clock: _Clock | None = None) -> str:
    """The hop as one JSON object per line, with the key names of Istio's JSON access log."""
    tcp = hop.protocol == "tcp"
    record = {
        "start_time": (clock or _Clock()).iso(hop.start_time),
        "method": None if tcp else hop.method or None,
        "path": None if tcp else hop.path or None,
        "protocol": None if tcp else hop.protocol,
        "response_code": hop.status,
        "response_flags": hop.response_flags or "-",
        "bytes_received": hop.request_bytes,
        "bytes_sent": hop.response_bytes,
        "duration": int(hop.duration_ms),
        "upstream_service_time": (None if hop.upstream_service_time_ms is None
                                  else int(hop.upstream_service_time_ms)),
        "user_agent": hop.user_agent or None,
        "request_id": hop.request_id or None,
        "authority": hop.authority or None,
        "upstream_host": hop.upstream_address or None,
        "upstream_cluster": hop.upstream_cluster or None,
        "downstream_remote_address": hop.downstream_address or None,
        "route_name": hop.route_name or None,
        "direction": hop.direction,
        "trace_id": hop.trace_id or None,
        "span_id": hop.span_id or None,
    }
    # ensure_ascii keeps any odd byte from becoming a raw control character in the output.
    return json.dumps(record, separators=(",", ":")) + "\n"


class AccessLog:
    """A `HopObserver` writing one line per hop to `stream` (stdout by default) from a background thread."""

    def __init__(self, stream: IO[str] | None = None, *, format: str = "envoy",
                 max_queue: int = 10_000, flush_interval: float = 0.1) -> None:
        if format not in ("envoy", "json"):
            raise ValueError(f"access log format must be 'envoy' or 'json', not {format!r}")
        self._stream = stream if stream is not None else sys.stdout
        self._format = format_json if format == "json" else format_envoy
        self._clock = _Clock()
        self._queue: deque[str] = deque()
        self._max_queue = max_queue
        self._high_water = max(1, max_queue // 4)
        self._flush_interval = flush_interval
        self._wake = threading.Event()
        self._closed = False
        # Each counter has a single writing thread, so plain `+=` never loses an update.
        self.written = 0          # writer thread
        self.lost = 0             # writer thread: lines whose write failed
        self.write_errors = 0     # writer thread
        self.dropped = 0          # event loop: queue full or log closed
        self.errors = 0           # event loop: a hop that could not be formatted
        # Not `_thread`: compiled, that attribute would become a C struct field `__thread`, a C keyword to gcc.
        self._writer = threading.Thread(target=self._run, name="meshtrace-access-log", daemon=True)
        self._writer.start()

    def on_hop(self, hop: Hop) -> None:
        """Queue the line for `hop`; drop (and count) it when the writer is behind by `max_queue` lines."""
        try:
            if self._closed or len(self._queue) >= self._max_queue:
                self.dropped += 1
                return
            self._queue.append(self._format(hop, self._clock))
            if len(self._queue) == self._high_water:
                self._wake.set()
        except Exception:
            self.errors += 1

    def stats(self) -> dict[str, int]:
        return {"access_log_written": self.written, "access_log_dropped": self.dropped + self.lost,
                "access_log_errors": self.errors + self.write_errors, "access_log_queued": len(self._queue)}

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued (waiting at most `timeout` seconds) and stop the writer thread."""
        self._closed = True
        self._wake.set()
        self._writer.join(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait(self._flush_interval)
            self._wake.clear()
            self._drain()
            if self._closed:
                self._drain()
                return

    def _drain(self) -> None:
        queue = self._queue
        lines: list[str] = []
        try:
            while True:
                lines.append(queue.popleft())  # deque.popleft is atomic: no lock against on_hop
        except IndexError:
            pass
        if not lines:
            return
        try:
            self._stream.write("".join(lines))
            self._stream.flush()
            self.written += len(lines)
        except Exception:
            # A closed or broken stdout must not kill the thread (and with it every later line).
            self.write_errors += 1
            self.lost += len(lines)
