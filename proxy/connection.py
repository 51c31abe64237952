"""The connection manager: one asyncio protocol per downstream connection, pipelining, flow control, timeouts.

Theory of operation. Bytes go to the codec, which calls back with request heads, body chunks and ends. Each
head becomes an Exchange appended to `queue`; only the front one runs (`start()`), so pipelined requests are
answered in order. While more than one is queued, reading is paused: at most one socket read of pipelined
requests is ever held (with their bodies) in memory. Reading is paused for independent reasons (bit flags):
the pipeline, a request body buffered while the upstream connects, an upstream that does not read fast enough,
an upgrade waiting for its 101; it resumes when no reason is left. Writing the other way round: when our write
buffer to the client fills, the upstream that feeds it stops being read.

A single timer per connection covers the idle keep-alive timeout and the request-head timeout (408): it is
armed when the connection becomes idle and re-armed when a head starts arriving in pieces; the fast path
(a whole head in one read) never touches it. A request does not cancel it either: if it fires while a request
is in flight it does nothing and is re-armed when the connection is idle again, so a keep-alive connection
costs one timer per timeout period instead of two timer operations per request. The route timeout of the
exchange in flight (one without retries) rides on the same timer: `set_deadline` only re-arms it when it would
fire too late, `clear_deadline` (response head arrived) just forgets the deadline, and a timer firing early for
it is re-armed for the rest; so a keep-alive connection's requests make no timer each either. Exchanges own
their other timers (fault delays, retry backoff, per-try timeouts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import deque
from typing import cast

from . import flags, localreply
from .codec import RequestCodec, RequestHead
from .errors import ProtocolError
from .exchange import Exchange
from .hop import UNKNOWN, Hop
from .listener import ListenerContext

__all__ = ["DownstreamConnection"]

logger = logging.getLogger("meshtrace.proxy")


class DownstreamConnection(asyncio.Protocol):
    PAUSE_PIPELINE = 1
    PAUSE_PENDING = 2
    PAUSE_UPSTREAM = 4
    PAUSE_UPGRADE = 8

    __slots__ = ("_deadline", "_head_started_at", "_idle_since", "_idle_sweeps", "_timer", "_timer_due", "activity",
                 "closed", "codec", "ctx", "deadline_owner", "draining", "paused", "peer", "queue", "reading",
                 "transport", "tunnel", "upgraded", "write_paused")

    def __init__(self, ctx: ListenerContext) -> None:
        self.ctx = ctx
        self.transport: asyncio.Transport | None = None
        self.codec = RequestCodec(self, max_header_bytes=ctx.limits.max_header_bytes)
        self.queue: deque[Exchange] = deque()
        self.reading: Exchange | None = None
        self.tunnel: Exchange | None = None
        self.upgraded = False
        self.paused = 0
        self.write_paused = False
        self.closed = False
        self.draining = ctx.draining
        self.peer = ""
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0               # loop time `_timer` fires at
        self._deadline = 0.0                # loop time the front exchange's route timeout expires at
        # The exchange whose route timeout the timer carries; it clears this itself when its response head arrives.
        self.deadline_owner: Exchange | None = None
        self._idle_since = 0.0
        self._head_started_at = 0.0
        self.activity = False               # a byte moved since the last stream-idle sweep
        self._idle_sweeps = 0

    # -- asyncio.Protocol --------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer = f"{peer[0]}:{peer[1]}"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):     # not TCP (a test's socketpair): nothing to tune
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=self.ctx.limits.write_buffer_high)
        self.ctx.connections.add(self)
        self._become_idle()

    def data_received(self, data: bytes) -> None:
        self.activity = True
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.on_request_body(data)
            return
        if self.closed:
            return
        if self.upgraded:
            return                          # parser spent by an upgrade that was refused: ignore until close
        codec = self.codec
        was_started = codec.started
        try:
            offset = codec.feed(data)
        except ProtocolError as exc:
            self._protocol_error(exc)
            return
        queue = self.queue
        if offset is not None:
            self.upgraded = True
            if queue:
                queue[-1].upgrade_tail = data[offset:] or None
            self.pause(self.PAUSE_UPGRADE)
        if queue:
            front = queue[0]
            if not front.started:
                # Started only once the whole read parsed cleanly: a request whose framing breaks later
                # in the same read never reaches the upstream at all.
                front.start()
        elif codec.started and not was_started:
            # A head arrived in pieces: from now on it has `header_timeout` to complete.
            self._head_started_at = self.ctx.loop.time()
            self._arm_timer(self.ctx.limits.header_timeout)

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.ctx.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for exchange in list(self.queue):
            exchange.downstream_lost()
        self.queue.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.queue:
            up = self.queue[0].upstream
            if up is not None:
                up.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.queue:
            up = self.queue[0].upstream
            if up is not None:
                up.resume_reading()

    # -- RequestSink (called from inside codec.feed) -------------------------------------------------------------
    def on_request_head(self, head: RequestHead) -> None:
        if self.closed:
            return
        exchange = Exchange(self, head)
        self.reading = exchange
        queue = self.queue
        queue.append(exchange)
        if len(queue) > 1:
            self.pause(self.PAUSE_PIPELINE)

    def on_request_body(self, data: bytes) -> None:
        reading = self.reading
        if reading is not None:
            reading.on_request_body(data)

    def on_request_end(self) -> None:
        reading = self.reading
        if reading is not None:
            self.reading = None
            if reading.upstream is None and reading.mirror_out is None:
                # Exchange.on_request_end's whole work for a request that ends within the read that brought its
                # head (its start comes after the read): nothing to send anywhere yet (one call fewer).
                reading.request_done = True
            else:
                reading.on_request_end()

    # -- called by exchanges -----------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def writelines(self, parts: list[bytes]) -> None:
        if not self.closed and self.transport is not None:
            self.transport.writelines(parts)

    def pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def set_deadline(self, exchange: Exchange, delay: float) -> None:
        """`exchange.deadline_passed()` in `delay` seconds unless `clear_deadline(exchange)` comes first."""
        loop = self.ctx.loop
        due = loop.time() + delay
        self._deadline = due
        self.deadline_owner = exchange
        if self._timer is None or self._timer_due > due:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_due = due
            self._timer = loop.call_later(delay, self._on_timer)

    def clear_deadline(self, exchange: Exchange) -> None:
        if self.deadline_owner is exchange:
            self.deadline_owner = None

    def start_tunnel(self, exchange: Exchange) -> None:
        """After a 101: every further byte is the upstream's business; the parser is out of the way."""
        self.tunnel = exchange
        self.resume(self.PAUSE_UPGRADE)

    def exchange_done(self, exchange: Exchange) -> None:
        queue = self.queue
        if queue and queue[0] is exchange:
            queue.popleft()
        elif exchange in queue:
            queue.remove(exchange)
        if self.reading is exchange and exchange.request_done:
            self.reading = None
        if self.closed:
            return
        if not exchange.keep_alive or not exchange.request_done or self.draining or exchange.tunnel:
            self.close()
            return
        if self.paused:
            self.resume(self.PAUSE_PENDING | self.PAUSE_UPSTREAM)
        if queue:
            if len(queue) == 1:
                self.resume(self.PAUSE_PIPELINE)
            # From the loop, not from here: a run of pipelined requests answered locally would otherwise
            # recurse (start -> reply -> done -> start ...) once per request.
            self.ctx.loop.call_soon(self._start_front)
        else:
            if self.paused:
                self.resume(self.PAUSE_PIPELINE)
            if self._timer is not None and not self.draining:
                self._idle_since = self.ctx.loop.time()     # _become_idle with its timer already armed, inline
            else:
                self._become_idle()

    def idle_sweep(self, limit: int) -> None:
        """Called by the listener a few times per stream idle timeout; the `limit`-th quiet sweep times out."""
        if not self.queue or self.activity:
            self.activity = False
            self._idle_sweeps = 0
            return
        self._idle_sweeps += 1
        if self._idle_sweeps >= limit:
            self._idle_sweeps = 0
            self.queue[0].stream_idle_timeout()

    def _start_front(self) -> None:
        if self.queue and not self.closed and not self.queue[0].started:
            self.queue[0].start()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()      # flushes what is buffered first

    def abort(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.abort()

    def drain(self) -> None:
        """SIGTERM: close now if idle, else after the response in flight."""
        self.draining = True
        if not self.queue and not self.codec.started:
            self.close()

    # -- errors and timers -------------------------------------------------------------------------------------
    def _protocol_error(self, exc: ProtocolError) -> None:
        """A request broke framing: answer it locally and close; never forward it."""
        queue = self.queue
        reading = self.reading
        if not any(exchange.started for exchange in queue):
            for exchange in queue:
                exchange.finished = True        # never began: no span, no upstream, nothing to undo
            queue.clear()
        elif reading is not None and queue[0] is reading and len(queue) == 1 and not reading.response_started:
            # The body of the request in flight was malformed (bad chunk): answer for it.
            reading.keep_alive = False
            reading.local_reply(exc.status, flags.DPE, exc.reason)
            return
        if queue:
            # Earlier pipelined responses are still owed, or the response already started: nothing
            # sensible can be written after them; a reset is the honest answer.
            for exchange in list(queue):
                if exchange.started and not exchange.finished:
                    exchange.flags.append(flags.DPE)
            self.abort()
            return
        self.write(localreply.build(exc.status, exc.reason, close=True))
        self.close()
        self._report_rejected(exc)

    def _report_rejected(self, exc: ProtocolError) -> None:
        ctx = self.ctx
        ctx.report(Hop(direction=ctx.direction, start_time=time.time(), status=exc.status,
                       response_flags=flags.DPE, downstream_address=self.peer,
                       source=UNKNOWN if ctx.inbound else ctx.identity,
                       destination=ctx.identity if ctx.inbound else UNKNOWN))

    def _become_idle(self) -> None:
        loop = self.ctx.loop
        self._idle_since = loop.time()
        if self.draining:
            self.close()
            return
        if self._timer is None:
            limits = self.ctx.limits
            delay = min(limits.idle_timeout, limits.header_timeout)
            self._timer_due = self._idle_since + delay
            self._timer = loop.call_later(delay, self._on_timer)

    def _arm_timer(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        delay = max(delay, 0.0)
        self._timer_due = self.ctx.loop.time() + delay
        self._timer = self.ctx.loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.closed:
            return
        if self.queue:
            # A request is in flight: only its route timeout matters now; idle and header timeouts are re-armed
            # when the connection is idle again.
            owner = self.deadline_owner
            if owner is not None:
                remaining = self._deadline - self.ctx.loop.time()
                if remaining > 0.001:       # woken early, for an idle or header timeout: sleep on
                    self._arm_timer(remaining)
                else:
                    self.deadline_owner = None
                    owner.deadline_passed()
            return
        now = self.ctx.loop.time()
        limits = self.ctx.limits
        if self.codec.started:
            due = self._head_started_at + limits.header_timeout
            if now >= due:
                self.write(localreply.build(408, "request header timeout", close=True))
                self.close()
                self._report_rejected(ProtocolError(408, "request header timeout"))
            else:
                self._arm_timer(due - now)
            return
        due = self._idle_since + limits.idle_timeout
        if now >= due:
            self.close()
        else:
            self._arm_timer(min(due - now, limits.header_timeout))
