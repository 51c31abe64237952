"""One request/response through the sidecar: route, span, upstream connection, streaming both ways, the Hop.

Theory of operation. An Exchange is made when the codec has a request head, and `start()`ed when it reaches
the front of its connection's pipeline queue:

    start -> [local reply] ----------------------------------------------------------> finished
          -> acquire upstream (idle one now, or a connect task) -> attached -> head sent
             -> response head -> body ... -> response end -> finished (upstream back to the pool)
             -> 101 -> tunnel (raw bytes both ways) -> either side closes -> finished

The request body may keep arriving during all of this: before `attached` it is buffered (bounded, reading
paused beyond `max_pending_body`), afterwards written straight to the upstream, re-framed. Upstream trouble
before the response head becomes a local reply with Envoy's flag (UF 503, UC 503, UT 504, UPE 502); after the
head has gone out nothing can be said any more, so the downstream connection is reset and the flag recorded.
`finish()` runs exactly once: it takes the hop's end times, hands the connection back its turn and queues the
hop's report (Istio counters, span end, observers), which runs once the listener's responses in flight are out
(proxy.reports).
"""

from __future__ import annotations

from time import perf_counter_ns, time_ns  # bound: compiled, `time.x()` is a module getattr, then the call
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.context import Context

from . import flags, localreply
from .attempt_span import end_attempt, start_attempt
from .codec import RequestHead, ResponseHead, encode_request_head, encode_response_head, header_lines
from .errors import UpstreamError
from .headers import Headers
from .hop import UNKNOWN, Hop, Workload
from .mirror import send_mirror
from .peer import decode_peer
from .pool import ConnectionPool
from .request_id import new_request_id_pair
from .retry import RetryPolicy
from .router import Route, RouteDecision, split_authority
from .upstream import UpstreamConnection

if TYPE_CHECKING:
    from .balancer import Host
    from .breaker import ClusterLimits
    from .connection import DownstreamConnection

__all__ = ["Exchange"]


_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_CRLF = b"\r\n"
_TUNNEL_KEEP = frozenset({b"connection", b"upgrade"})
KEEP_LIMIT = 64 * 1024      # request body bytes kept for retries; a bigger body is never retried


class Exchange:
    __slots__ = (
        "_attempt",
        "_attempt_head",
        "_deadline",
        "_on_clock",
        "_out",
        "_rendered",
        "_span",
        "_timer",
        "_trace_context",
        "authority",
        "conn",
        "counted",
        "ctx",
        "decision",
        "destination",
        "end_ns",
        "finished",
        "flags",
        "head",
        "keep_alive",
        "kept",
        "kept_size",
        "limits",
        "mirror_out",
        "out_head",
        "pending",
        "pending_size",
        "pool",
        "request_bytes",
        "request_done",
        "request_id",
        "request_id_text",
        "request_sent",
        "resp_chunked",
        "response_bytes",
        "response_started",
        "retried",
        "retry",
        "retry_slot",
        "source",
        "start_ns",
        "started",
        "status",
        "tries",
        "tunnel",
        "up_keep_alive",
        "upgrade_tail",
        "upstream",
        "upstream_address",
        "upstream_done_ns",
        "upstream_ns",
        "waiting",
    )

    def __init__(self, conn: DownstreamConnection, head: RequestHead) -> None:
        self.conn = conn
        self.ctx = conn.ctx
        self.head = head
        self.start_ns = time_ns()
        self.started = False
        self.finished = False
        self.decision: RouteDecision | None = None
        self.pool: ConnectionPool | None = None
        self.upstream: UpstreamConnection | None = None
        self.upstream_address = ""
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.request_done = False
        self.request_sent = False
        self.response_started = False
        self.resp_chunked = False
        self.keep_alive = head.keep_alive
        self.up_keep_alive = False
        self.status = 0
        self.flags: list[str] = []
        self.request_bytes = 0
        self.response_bytes = 0
        self.request_id = b""
        self.request_id_text = ""               # the id as text when this sidecar made it, else "" until needed
        self.authority = b""
        self.out_head = b""
        self.retried = False
        self.tunnel = False
        self.upgrade_tail: bytes | None = None
        self.upstream_ns = 0
        self.upstream_done_ns = 0               # when it finished, on the same clock (its report may run later)
        self.end_ns = 0
        self._span: trace.Span | None = None
        self._trace_context: Context | None = None
        # The trace header block sent upstream and the hex trace and span ids it holds (for the hop record).
        self._rendered: tuple[bytes, str, str] | None = None
        self._out: list[bytes] = []        # response bytes of the current upstream read, written at its end
        self._timer: object | None = None
        self._on_clock = False                  # the route timeout is set on the connection's timer
        self._deadline: object | None = None   # with retries: the route timeout over all tries
        self.retry: RetryPolicy | None = None
        self.tries = 0
        self.kept: list[bytes] | None = None    # request body kept for a retry; None once too big
        self.kept_size = 0
        self.source: Workload | None = None
        self.destination: Workload | None = None
        self.limits: ClusterLimits | None = None    # the cluster's circuit breakers, when its rule sets any
        self.retry_slot = False                     # holds one of the cluster's maxRetries
        self.waiting = False                        # queued for a connection (http1MaxPendingRequests)
        self._attempt: trace.Span | None = None     # the current try's CLIENT span (routes with retries)
        # With attempt spans: the upstream head's headers and where each try's trace headers go into them.
        self._attempt_head: tuple[Headers, int] | None = None
        self.counted: Host | None = None            # the host whose in-flight count holds this request
        self.mirror_out: Headers | None = None      # headers for the mirror copy, until it is sent

    # -- request side ------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Route, open the span, build the upstream head, and get a connection. Runs at the queue front."""
        self.started = True
        ctx = self.ctx
        ctx.reports.in_flight += 1
        head = self.head
        hmap = head.hmap
        if head.method == b"CONNECT":
            self.local_reply(405, flags.NONE, "CONNECT is not supported by this proxy")
            return
        decision = ctx.router.route(head, self.conn.peer)
        self.decision = decision
        self.authority = decision.authority if decision is not None else hmap.get(b"host", b"")
        # `in` before a look-up, here and below: a header most requests lack then costs no method call.
        added_id = b"x-request-id" not in hmap or not hmap[b"x-request-id"]
        if added_id:
            self.request_id, self.request_id_text = new_request_id_pair()
        else:
            self.request_id = hmap[b"x-request-id"]
        tracer = ctx.tracer
        if tracer is not None:
            name = _span_name(self.authority, decision.route if decision is not None else None)
            self._span, self._trace_context = tracer.start(hmap, name, self.start_ns)
        if ctx.inbound:
            if ctx.peer_header in hmap:
                announced = hmap[ctx.peer_header]
                self.source = decode_peer(announced) if announced else UNKNOWN
            else:
                self.source = UNKNOWN
        if decision is None:
            self.local_reply(404, flags.NR, "route not found")
            return
        if decision.no_host:
            self.local_reply(503, flags.UH, "no healthy upstream")
            return
        route = decision.route
        policy = decision.policy
        if policy is not None and not head.upgrade:     # Istio rules: retries and mirroring keep the body
            if policy.retries is not None:
                self.retry = policy.retries
                # Body bytes read before the start are all still pending: they are the start of the kept copy.
                if self.pending_size <= KEEP_LIMIT:
                    self.kept = list(self.pending)
                    self.kept_size = self.pending_size
            # A mirror copy needs the whole body too: the same 64 KiB rule as retries (a bigger body is not
            # mirrored).
            mirror = policy.mirror
            if (mirror is not None and mirror.wanted()
                    and (self.kept is not None or self.pending_size <= KEEP_LIMIT)):
                if self.kept is None:
                    self.kept = list(self.pending)
                    self.kept_size = self.pending_size
                self.mirror_out = []

        drop = ctx.request_drop if b"connection" not in hmap else ctx.drop_with(False, hmap[b"connection"])
        rewrite_host = decision.rewrite_host
        if rewrite_host:
            drop = drop | {b"host"}
        # Most requests carry nothing to drop: then the head's own list, which nothing reads after this, instead of
        # a Python-level filter.
        out: Headers = (head.headers if drop.isdisjoint(hmap)
                        else [pair for pair in head.headers if pair[0] not in drop])
        if rewrite_host:
            out.insert(0, (b"host", decision.authority))
        if policy is not None and policy.request_headers:
            out = policy.request_headers.apply(out)
        if added_id:
            out.append((b"x-request-id", self.request_id))
        if not ctx.inbound:
            out.append((ctx.peer_header, ctx.peer_value))
        if self.mirror_out is not None:
            self.mirror_out = list(out)
        trace_at = -1
        block = b""
        if self._span is not None and self._trace_context is not None and tracer is not None:
            if self.retry is not None and self._span.is_recording():
                # Each try gets a span of its own and sends trace headers naming it (`_start_attempt` encodes
                # its head), so the upstream's spans nest under the try that reached it, as with Envoy.
                trace_at = len(out)
            else:
                # Usually one ready block of header lines, which the head's encoder takes whole.
                rendered = self._rendered = tracer.render(self._span, self._trace_context)
                if rendered is not None:
                    block = rendered[0]
                else:
                    tracer.inject(self._span, self._trace_context, out)
        if head.upgrade or head.chunked:
            after: Headers = ([(b"connection", b"upgrade"), (b"upgrade", hmap.get(b"upgrade", b""))]
                              if head.upgrade else [])
            if head.chunked:
                after.append((b"transfer-encoding", b"chunked"))
            if block:   # these go after the trace headers, as lines of the block
                block += header_lines(after)
            else:
                out += after
        if trace_at < 0:
            self.out_head = encode_request_head(head.method, decision.target, out, block)
        else:
            self._attempt_head = (out, trace_at)
        limits = route.limits
        if limits is None:
            self.pool = ctx.pools.get(route.host, route.port)
        else:
            self.limits = limits
            self.pool = ctx.pools.get_limited(route.host, route.port, limits)
        self.upstream_address = self.pool.address
        if self.mirror_out is not None and self.request_done:
            self._send_mirror()
        if policy is not None and policy.fault is not None:
            fault = policy.fault.decide()
            if fault.delay is not None:
                self.flags.append(flags.DI)
                self._timer = ctx.loop.call_later(fault.delay, self._after_delay, fault.abort_status)
                return
            if fault.abort_status is not None:
                self._abort_fault(fault.abort_status)
                return
        self._acquire()

    def _after_delay(self, abort_status: int | None) -> None:
        self._timer = None
        if self.finished:
            return
        if abort_status is not None:
            self._abort_fault(abort_status)
        else:
            self._acquire()

    def _abort_fault(self, status: int) -> None:
        self.local_reply(status, flags.FI, "fault filter abort")

    def _acquire(self) -> None:
        assert self.pool is not None
        self.tries += 1
        self.upstream_ns = perf_counter_ns()
        if self._attempt_head is not None:
            self._start_attempt()
        conn = self.pool.acquire_idle()
        if conn is not None:
            self._attach(conn)
            return
        limits = self.limits
        if limits is None or limits.connections.try_acquire():
            self.ctx.loop.create_task(self._connect(self.pool))
        elif limits.wait(self):
            self.waiting = True             # maxConnections reached: wait for one (http1MaxPendingRequests)
        else:
            self.local_reply(503, flags.UO, localreply.reset_before_headers("overflow"))

    # -- circuit breakers (breaker.Waiter) ---------------------------------------------------------------------
    @property
    def wait_key(self) -> object:
        return self.pool

    def on_slot(self) -> None:
        """A connection slot of the cluster freed up while this request waited: open a connection."""
        self.waiting = False
        assert self.pool is not None
        self.ctx.loop.create_task(self._connect(self.pool))

    def on_connection(self, conn: UpstreamConnection) -> None:
        """A connection its pool released, lent straight to this waiting request."""
        self.waiting = False
        self._attach(conn)

    def _record_health(self, status: int) -> None:
        """One try's outcome for outlier detection: a status, or 0 for a connect failure or reset."""
        assert self.decision is not None
        assert self.decision.route.health is not None
        detector, host = self.decision.route.health
        detector.record(host, status)

    def _release_limits(self, limits: ClusterLimits) -> None:
        if self.waiting:
            self.waiting = False
            limits.cancel(self)
        if self.retry_slot:
            self.retry_slot = False
            limits.retries.release()

    async def _connect(self, pool: ConnectionPool) -> None:
        try:
            conn = await pool.connect()
        except UpstreamError as exc:
            if not self.finished:
                if self.decision is not None and self.decision.route.health is not None:
                    self._record_health(0)
                if self.retry is not None and self.retry.connect_failure and self._retry_later(0, exc.flag):
                    return
                self._exhausted()
                self.local_reply(503, exc.flag, exc.reason)
            return
        except Exception as exc:  # a resolver or OS surprise: still a clean 503, never a dead connection
            if not self.finished:
                self.local_reply(503, flags.UF, localreply.reset_before_headers(localreply.CONNECT_FAILURE, str(exc)))
            return
        if self.finished:
            pool.release(conn)      # the downstream went away meanwhile; the connection is still good
            return
        self._attach(conn)

    def _attach(self, up: UpstreamConnection) -> None:
        self.upstream = up
        if self.counted is None and self.decision is not None:
            endpoint = self.decision.route.endpoint
            if endpoint is not None:            # in flight on its host until it finishes (LEAST_REQUEST)
                endpoint.active += 1
                self.counted = endpoint
        up.attach(self, self.head.method == b"HEAD")
        conn = self.conn
        if conn.write_paused:
            up.pause_reading()
        if self.head.expect_continue and not self.request_done and not self.request_bytes and self.tries == 1:
            conn.write(_CONTINUE)       # we stripped Expect upstream, so the 100 is ours to send
        chunked = self.head.chunked
        if not self.pending and not chunked:
            # The common bodiless request: its head alone, with the upstream connection's write guard inline.
            transport = up.transport
            if transport is not None and not up.closed:
                transport.write(self.out_head)
            if self.request_done:
                self.request_sent = True
        else:
            parts = [self.out_head]
            for data in self.pending:
                if chunked:
                    parts += (b"%x\r\n" % len(data), data, _CRLF)
                else:
                    parts.append(data)
            if self.request_done:
                if chunked:
                    parts.append(_LAST_CHUNK)
                self.request_sent = True
            up.write(b"".join(parts))
        if self.pending:
            self.pending = []
        if self.pending_size:
            self.pending_size = 0
            conn.resume(conn.PAUSE_PENDING)
        if self.request_sent:
            if self.retry is None and not self._on_clock and self._timer is None and not self.response_started:
                # _start_timer's common case inline: the route timeout rides on the connection's timer.
                timeout = self.decision.route.timeout if self.decision is not None else None
                if timeout:
                    self._on_clock = True
                    conn.set_deadline(self, timeout)
            else:
                self._start_timer()

    def _start_timer(self) -> None:
        # As Envoy's route timeout, it runs from the end of the request, so a long upload is never cut short.
        timeout = self.decision.route.timeout if self.decision is not None else None
        retry = self.retry
        if retry is not None:
            if timeout and self._deadline is None:
                self._deadline = self.ctx.loop.call_later(timeout, self._on_deadline)
            timeout = retry.per_try_timeout
        if timeout and self._timer is None and not self.response_started:
            if retry is not None:
                self._timer = self.ctx.loop.call_later(timeout, self._on_timeout)
            elif not self._on_clock:
                # One timer per request would cost more than a keep-alive request's whole routing: without
                # retries the timeout rides on the connection's timer, which calls `deadline_passed`.
                self._on_clock = True
                self.conn.set_deadline(self, timeout)

    # -- retries ---------------------------------------------------------------------------------------------------
    # Theory of operation. A route with `retries` keeps the request body while it stays small (`KEEP_LIMIT`);
    # a request whose body outgrew that is never retried (its bytes are gone). A failed try (retriable status
    # before any response byte went downstream, reset, connect failure, per-try timeout) drops its upstream
    # connection, re-queues the kept body as pending, and re-acquires after a jittered backoff; the route
    # timeout (`_deadline`) runs from the first try's request end and covers all tries. With tracing, each try
    # has its own CLIENT span (a child of the hop span) and its request head carries that span's trace headers,
    # re-encoded per try; the hop record keeps the hop span's ids.
    def _start_attempt(self) -> None:
        if self._attempt is not None:
            end_attempt(self._attempt, 0, "superseded")
        tracer = self.ctx.tracer
        decision = self.decision
        span = self._span
        attempt_head = self._attempt_head
        assert span is not None
        assert tracer is not None
        assert decision is not None
        assert attempt_head is not None
        attempt = start_attempt(tracer.tracer, span, self._trace_context, decision.route.cluster, self.tries,
                                self.upstream_address)
        self._attempt = attempt
        headers, trace_at = attempt_head
        out = headers[:trace_at]
        context = self._trace_context or Context()
        rendered = tracer.render(attempt, context)    # its ids are not the hop record's
        if rendered is not None:    # the headers after the trace headers' place go as lines after the block
            block = rendered[0] + header_lines(headers[trace_at:]) if trace_at < len(headers) else rendered[0]
        else:
            block = b""
            tracer.inject(attempt, context, out)
            out += headers[trace_at:]
        self.out_head = encode_request_head(self.head.method, decision.target, out, block)

    def _end_attempt(self, status: int, error: str = "") -> None:
        attempt = self._attempt
        if attempt is not None:
            self._attempt = None
            end_attempt(attempt, status, error)

    def _retry_later(self, status: int = 0, error: str = "") -> bool:
        """Schedule another try if the policy, the budget and the kept body allow; True when scheduled."""
        retry = self.retry
        if retry is None or self.kept is None or self.finished or self.tries > retry.attempts:
            return False
        limits = self.limits
        if limits is not None and not self.retry_slot:
            if not limits.retries.try_acquire():
                self.flags.append(flags.UO)     # maxRetries: no retry, the failed try's answer goes out
                return False
            self.retry_slot = True
        self._end_attempt(status, error)
        self._cancel_timer()
        self._abort_upstream()
        self.request_sent = False
        self.response_started = False
        self.status = 0
        self._out = []
        self.pending = list(self.kept)
        self._timer = self.ctx.loop.call_later(retry.backoff(self.tries), self._retry_now)
        return True

    def _retry_now(self) -> None:
        self._timer = None
        if not self.finished:
            self._acquire()

    def _exhausted(self) -> None:
        if self.retry is not None and self.tries > 1:
            self.flags.append(flags.URX)

    def _on_deadline(self) -> None:
        self._deadline = None
        if self.finished or self.response_started:
            return
        self._exhausted()
        self._abort_upstream()
        self.local_reply(504, flags.UT, "upstream request timeout")

    def on_request_body(self, data: bytes) -> None:
        self.request_bytes += len(data)
        kept = self.kept
        if kept is not None:
            self.kept_size += len(data)
            if self.kept_size > KEEP_LIMIT:
                self.kept = None
            else:
                kept.append(data)
        up = self.upstream
        if up is not None:
            if self.tunnel:
                up.write(data)
            elif self.head.chunked:
                up.writelines([b"%x\r\n" % len(data), data, _CRLF])
            else:
                up.write(data)
        elif not self.finished:
            self.pending.append(data)
            self.pending_size += len(data)
            if self.pending_size > self.ctx.limits.max_pending_body:
                self.conn.pause(self.conn.PAUSE_PENDING)

    def _send_mirror(self) -> None:
        """The whole request is here: fire its copy (if its body was small enough to keep) and forget it."""
        headers = self.mirror_out
        self.mirror_out = None
        decision = self.decision
        if headers is None or decision is None or decision.policy is None or decision.policy.mirror is None:
            return
        if self.kept is None:
            return          # the body outgrew KEEP_LIMIT while it arrived: no copy
        send_mirror(decision.policy.mirror, self.head.method, decision.target, self.authority, headers,
                    list(self.kept), tracer=self.ctx.tracer, parent=self._span, parent_context=self._trace_context)

    def on_request_end(self) -> None:
        self.request_done = True
        if self.mirror_out is not None and self.started:
            self._send_mirror()
        up = self.upstream
        if up is not None and not self.finished:
            if self.head.chunked:
                up.write(_LAST_CHUNK)
            self.request_sent = True
            self._start_timer()

    def on_upstream_write_paused(self, paused: bool) -> None:
        if paused:
            self.conn.pause(self.conn.PAUSE_UPSTREAM)
        else:
            self.conn.resume(self.conn.PAUSE_UPSTREAM)

    # -- response side -----------------------------------------------------------------------------------------
    def on_response_head(self, head: ResponseHead) -> None:
        conn = self.conn
        if self._on_clock:
            # _cancel_timer's common case inline: the route timeout rode on the connection's timer.
            self._on_clock = False
            if conn.deadline_owner is self:
                conn.deadline_owner = None
        if self._timer is not None:
            self._cancel_timer()
        status = head.status
        decision = self.decision
        if decision is not None and decision.route.health is not None:
            self._record_health(status)
        retry = self.retry
        if retry is not None and retry.retriable_status(status):
            if self._retry_later(status):
                return
            self._exhausted()
        if self._deadline is not None:
            self._cancel_deadline()
        ctx = self.ctx
        request = self.head
        self.status = status
        self.up_keep_alive = head.keep_alive
        peer = ctx.peer_header
        connection = head.connection
        drop = (ctx.response_drop if connection is None
                else ctx.response_drops.get(connection) or ctx.drop_with(True, connection))
        upgrade = request.upgrade
        if upgrade and status == 101:
            drop = drop - _TUNNEL_KEEP  # a 101 must keep Connection/Upgrade: they say which protocol now runs
        # The head's own list, which nothing reads after this, loses the dropped names in place: a response names
        # one or two of them (nginx's Connection), so removing those costs less than filtering every header.
        out: Headers = head.headers
        hmap = head.hmap
        # A native loop over the head's few names; `frozenset.intersection` was a generic method call (1.9k).
        dropped = [name for name in hmap if name in drop]
        if dropped:
            if len(hmap) == len(out):      # no name repeats: each dropped name is exactly one (name, value) pair
                for name in dropped:
                    # Found by name alone, a native loop: `list.remove` compared whole tuples generically (1.4k
                    # instructions for nginx's Connection).
                    for index in range(len(out)):
                        if out[index][0] == name:
                            out.pop(index)
                            break
            else:
                out = [pair for pair in out if pair[0] not in drop]
        if ctx.inbound:
            out.append((peer, ctx.peer_value))
        elif peer in dropped:
            self.destination = decode_peer(hmap[peer])     # who answered, as its sidecar says
        if decision is not None and decision.policy is not None and decision.policy.response_headers:
            out = decision.policy.response_headers.apply(out)
        if upgrade:
            if status == 101:
                self.response_started = True
                self.tunnel = True
                conn.write(encode_response_head(101, out))
                conn.start_tunnel(self)
                if self.upgrade_tail and self.upstream is not None:
                    self.upstream.write(self.upgrade_tail)
                    self.upgrade_tail = None
                return
            self.keep_alive = False         # a refused upgrade leaves the downstream parser spent
        version_11 = request.version == b"1.1"
        if head.content_length is None and status not in (204, 304) and request.method != b"HEAD":
            if version_11:
                out.append((b"transfer-encoding", b"chunked"))
                self.resp_chunked = True
            else:
                self.keep_alive = False     # HTTP/1.0 client: the body ends when we close
        if conn.draining:
            self.keep_alive = False
        if not self.keep_alive:
            out.append((b"connection", b"close"))
        elif request.version == b"1.0":
            out.append((b"connection", b"keep-alive"))
        self.response_started = True
        self._out.append(encode_response_head(status, out))

    def on_response_body(self, data: bytes) -> None:
        self.response_bytes += len(data)
        if self.resp_chunked:
            self._out += (b"%x\r\n" % len(data), data, _CRLF)
        else:
            self._out.append(data)

    def on_read_complete(self) -> None:
        """End of one upstream read: one write (writev) for the head and body pieces it produced."""
        self.conn.activity = True
        out = self._out
        if out:
            self._out = []
            if len(out) == 1:
                self.conn.write(out[0])
            else:
                self.conn.writelines(out)

    def on_response_end(self) -> None:
        out = self._out
        if self.resp_chunked:
            out.append(_LAST_CHUNK)
        # on_read_complete inline (the downstream connection's write guard too): the response's last read is
        # written here in one go.
        conn = self.conn
        conn.activity = True
        if out:
            self._out = []
            transport = conn.transport
            if not conn.closed and transport is not None:
                if len(out) == 1:
                    transport.write(out[0])
                else:
                    transport.writelines(out)
        up = self.upstream
        self.upstream = None
        pool = self.pool
        if up is not None and pool is not None:
            if self.request_sent and self.up_keep_alive:
                up.detach()
                pool.release(up)
            else:
                up.close()
        self.finish()

    def on_tunnel_data(self, data: bytes) -> None:
        self.conn.activity = True
        self.response_bytes += len(data)
        self.conn.write(data)

    def on_upstream_lost(self, protocol_error: str | None) -> None:
        up = self.upstream
        self.upstream = None
        if self.finished:
            return
        if self.tunnel:
            self.conn.close()
            self.finish()
            return
        if not self.response_started:
            self._cancel_timer()
            if protocol_error is not None:
                self.local_reply(502, flags.UPE, f"upstream protocol error: {protocol_error}")
                return
            if (up is not None and up.reused and not up.got_response_bytes and not self.retried
                    and self.request_bytes == 0 and self.request_done):
                # A pooled connection the upstream had already closed: nothing reached the app, try afresh.
                self.retried = True
                self._acquire()
                return
            if self.decision is not None and self.decision.route.health is not None:
                self._record_health(0)
            if self.retry is not None and self.retry.reset and self._retry_later(0, flags.UC):
                return
            self._exhausted()
            self.local_reply(503, flags.UC, localreply.reset_before_headers(localreply.CONNECTION_TERMINATION))
            return
        self.flags.append(flags.UPE if protocol_error is not None else flags.UC)
        self.keep_alive = False
        self.on_read_complete()             # what did arrive goes out before the reset
        self.conn.abort()                   # headers already went out: only a reset says "incomplete"
        self.finish()

    def _on_timeout(self) -> None:
        self._timer = None
        if self.finished:
            return
        if self.retry is not None and not self.response_started:
            if self._retry_later(0, flags.UT):
                return
            self._exhausted()
        self._abort_upstream()
        if not self.response_started:
            self.local_reply(504, flags.UT, "upstream request timeout")
        else:
            self.flags.append(flags.UT)
            self.conn.abort()
            self.finish()

    def stream_idle_timeout(self) -> None:
        """Nothing moved either way for the stream idle timeout: 408 if we still can, else a reset."""
        if self.finished or not self.started:
            return
        self._abort_upstream()
        if not self.response_started:
            self.keep_alive = False
            self.local_reply(408, flags.SI, "stream timeout")
        else:
            self.flags.append(flags.SI)
            self.conn.abort()
            self.finish()

    def _abort_upstream(self) -> None:
        """Drop the upstream connection, if any, without returning it to the pool (its state is unknown)."""
        up = self.upstream
        self.upstream = None
        if up is not None:
            up.abort()

    def deadline_passed(self) -> None:
        """The route timeout set on the connection's timer expired (the connection forgot it already)."""
        self._on_clock = False
        self._on_timeout()

    def _cancel_timer(self) -> None:
        if self._on_clock:
            self._on_clock = False
            self.conn.clear_deadline(self)
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()  # type: ignore[attr-defined]

    def _cancel_deadline(self) -> None:
        deadline = self._deadline
        if deadline is not None:
            self._deadline = None
            deadline.cancel()  # type: ignore[attr-defined]

    # -- endings ---------------------------------------------------------------------------------------------
    def local_reply(self, status: int, flag: str, body: str) -> None:
        """Answer from the proxy itself; closes the connection when the request body is not all read."""
        if flag != flags.NONE:
            self.flags.append(flag)
        self._abort_upstream()
        self.status = status
        if not self.request_done or self.conn.draining or self.head.upgrade:
            self.keep_alive = False
        extra = [(self.ctx.peer_header, self.ctx.peer_value)] if self.ctx.inbound else None
        data = localreply.build(status, body, close=not self.keep_alive, head_only=self.head.method == b"HEAD",
                                extra=extra)
        self.response_bytes = len(body) + 1 if self.head.method != b"HEAD" else 0
        self.response_started = True
        self.conn.write(data)
        self.finish()

    def downstream_lost(self) -> None:
        """The client went away: drop the upstream (it may be mid-response) and record DC."""
        if self.finished:
            return
        self._abort_upstream()
        if not self.started:
            self.finished = True            # never began: no span, no hop
            return
        if not self.tunnel:
            self.flags.append(flags.DC)
        self.keep_alive = False
        self.finish()

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        counted = self.counted
        if counted is not None:
            self.counted = None
            counted.active -= 1
        if self._on_clock or self._timer is not None:
            self._cancel_timer()
        if self._deadline is not None:
            self._cancel_deadline()
        if self.limits is not None:
            self._release_limits(self.limits)
        if self._attempt is not None:
            self._end_attempt(self.status, flags.join(self.flags) if self.flags else "")
        # The hop's times are taken now; its telemetry runs once the listener's responses in flight are out.
        self.end_ns = time_ns()
        if self.upstream_ns:
            self.upstream_done_ns = perf_counter_ns()
        self.conn.exchange_done(self)
        reports = self.ctx.reports
        if self.started:        # as start() counted it (an exchange dropped before its start never finishes)
            reports.in_flight -= 1
        reports.add(self)

    def report(self) -> None:
        """The finished hop's Istio counters, span and observers (from the listener's ReportQueue)."""
        end_ns = self.end_ns
        ctx = self.ctx
        decision = self.decision
        if ctx.inbound:
            source = self.source or UNKNOWN
            destination = ctx.identity
        else:
            source = ctx.identity
            destination = self.destination or _unknown_destination(decision)
        status = self.status
        response_flags = ",".join(self.flags) if self.flags else flags.NONE     # flags.join, inline
        duration_ms = (end_ns - self.start_ns) / 1e6
        ctx.requests += 1
        counter = ctx.counter
        if counter is not None:     # the Istio metrics count from these values: no Hop needed for them
            counter.count_http(ctx.direction, source, destination, status, response_flags, duration_ms,
                               self.request_bytes, self.response_bytes)
        span = self._span
        tracer = ctx.tracer
        observers = ctx.hop_observers
        if not observers and (span is None or tracer is None):
            return                  # nobody else reads a Hop (no access log, no span): none is made
        head = self.head
        hmap = head.hmap
        upstream_ms = None
        if self.upstream_ns and status and not self.flags:
            upstream_ms = (self.upstream_done_ns - self.upstream_ns) / 1e6
        # A sidecar sees the same few authorities over and over: each is decoded once (bounded, as _SPAN_NAMES).
        authority = _AUTHORITIES.get(self.authority)
        if authority is None:
            authority = _authority_text(self.authority)
        user_agent = hmap.get(b"user-agent")
        # Filled field by field after the two required ones (a test reads every field back).
        hop = Hop(ctx.direction, self.start_ns / 1e9)
        hop.protocol = "HTTP/1.1" if head.version == b"1.1" else "HTTP/1.0"
        hop.method = _METHODS.get(head.method) or head.method.decode("latin-1")
        hop.path = (head.target.decode("latin-1") if decision is None or not decision.rewrite_host
                    else decision.target.decode("latin-1"))
        hop.authority = authority
        hop.scheme = "http"
        hop.user_agent = user_agent.decode("latin-1") if user_agent is not None else ""
        hop.request_id = self.request_id_text or self.request_id.decode("latin-1")
        hop.downstream_address = self.conn.peer
        hop.upstream_address = self.upstream_address
        if decision is not None:
            route = decision.route
            hop.upstream_cluster = route.cluster
            hop.route_name = route.name
        else:
            hop.upstream_cluster = hop.route_name = ""
        hop.status = status
        hop.response_flags = response_flags
        hop.request_bytes = self.request_bytes
        hop.response_bytes = self.response_bytes
        hop.duration_ms = duration_ms
        hop.upstream_service_time_ms = upstream_ms
        hop.source = source
        hop.destination = destination
        hop.attempts = (self.tries or 1) if self.pool is not None else 0
        if span is not None and tracer is not None:
            rendered = self._rendered
            if rendered is not None:
                hop.trace_id, hop.span_id = rendered[1], rendered[2]
            else:
                hop.trace_id, hop.span_id = tracer.ids(span)
            tracer.finish(span, hop, end_ns)
        else:
            hop.trace_id = hop.span_id = ""
        if observers:
            ctx.observe(hop)


# Method names as the hop record spells them: llhttp knows a fixed set, so this never grows past it.
_METHODS = {name: name.decode("latin-1") for name in (
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE", b"CONNECT")}

_SPAN_NAMES: dict[tuple[bytes, int, str], str] = {}
_AUTHORITIES: dict[bytes, str] = {}


def _authority_text(authority: bytes) -> str:
    text = authority.decode("latin-1")
    if len(_AUTHORITIES) >= 4096:
        _AUTHORITIES.clear()            # a client inventing authorities must not grow this forever
    _AUTHORITIES[authority] = text
    return text


def _span_name(authority: bytes, route: Route | None) -> str:
    """Istio's `{host}:{port}{path}` span name (`{authority}/*` without a route), cached: a sidecar sees the same
    few authorities and routes over and over."""
    key = (authority, route.port, route.span_path) if route is not None else (authority, -1, "")
    name = _SPAN_NAMES.get(key)
    if name is None:
        if route is not None:
            name = f"{split_host(authority, route.port)}:{route.port}{route.span_path}"
        else:
            name = f"{authority.decode('latin-1')}/*"
        if len(_SPAN_NAMES) >= 4096:
            _SPAN_NAMES.clear()         # a client inventing authorities must not grow this forever
        _SPAN_NAMES[key] = name
    return name


def split_host(authority: bytes, default_port: int) -> str:
    """The host part of an authority, for span names."""
    address = split_authority(authority, default_port)
    return address[0] if address is not None else authority.decode("latin-1")


_UNKNOWN_BY_SERVICE: dict[str, Workload] = {}


def _unknown_destination(decision: RouteDecision | None) -> Workload:
    """A destination without a sidecar of its own: only its service (host) name is known, as in Istio."""
    if decision is None:
        return UNKNOWN
    # The service is the host of the `outbound|port|subset|host` cluster (the VirtualService destination), not
    # the endpoint address chosen inside it: a fault abort answered before any endpoint replied must still be
    # counted against `reviews`, not against 127.0.0.1.
    host = decision.route.cluster.rpartition("|")[2] or decision.route.host
    known = _UNKNOWN_BY_SERVICE.get(host)
    if known is None:
        known = Workload(service=host)
        if len(_UNKNOWN_BY_SERVICE) < 4096:
            _UNKNOWN_BY_SERVICE[host] = known
    return known
