"""Hop reports run once the listener's responses are out (proxy.reports): every response of a batch, and of a bunch
still in flight, goes out before any of their telemetry; none waits longer than MAX_DELAY or MAX_QUEUED; none is
lost, and one failing report does not stop the others. They run in turns of SLICE_NS, so a request that arrives
meanwhile is read after one turn, not after all of them."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import uvloop
from proxy_harness import RawServer, SidecarThread, raw_exchange, read_head, sidecar_config

from meshtrace.proxy.reports import MAX_DELAY, MAX_QUEUED, SLICE_NS, ReportQueue

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}


class _Finished:
    """Stands in for a finished exchange: its report appends to the shared log (or raises)."""

    def __init__(self, name: str, log: list[str], fail: bool = False) -> None:
        self.name, self.log, self.fail = name, log, fail

    def report(self) -> None:
        if self.fail:
            raise RuntimeError(f"{self.name} cannot be recorded")
        self.log.append(f"report {self.name}")


@pytest.fixture(params=sorted(LOOPS))
def loop(request: pytest.FixtureRequest) -> Iterator[asyncio.AbstractEventLoop]:
    new_loop = LOOPS[request.param]()
    try:
        yield new_loop
    finally:
        new_loop.close()


def _finish_batch(queue: ReportQueue, log: list[str], names: str) -> None:
    """What one batch of upstream reads does: each answers its client, then finishes its exchange."""
    for name in names:
        log.append(f"write {name}")
        queue.add(_Finished(name, log))


def test_a_batch_writes_every_response_before_any_report(loop: asyncio.AbstractEventLoop) -> None:
    log: list[str] = []
    queue = ReportQueue(loop)

    async def main() -> None:
        loop.call_soon(_finish_batch, queue, log, "abc")
        await asyncio.sleep(0.01)           # the next turns of the loop: the reports ran before them

    loop.run_until_complete(main())
    assert log == ["write a", "write b", "write c", "report a", "report b", "report c"]


def test_reports_run_before_anything_read_after_the_batch(loop: asyncio.AbstractEventLoop) -> None:
    """A /metrics scrape or the client's next request is read on a later turn: the report is in by then."""
    log: list[str] = []
    queue = ReportQueue(loop)

    async def main() -> None:
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        writer.write(b"x")
        await writer.drain()
        await reader.read(1)
        log.append("client has its reply")
        writer.close()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        log.append("read")
        _finish_batch(queue, log, "a")
        writer.write(b"y")                  # the client's reply only now: what it triggers comes after "report a"
        await writer.drain()
        writer.close()

    server = loop.run_until_complete(asyncio.start_server(on_client, "127.0.0.1", 0))
    try:
        loop.run_until_complete(main())
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        server.close()
        loop.run_until_complete(server.wait_closed())
    assert log == ["read", "write a", "report a", "client has its reply"]


class _Slow(_Finished):
    """A report that takes longer than a turn (a traced report of a cold loop takes about 14 µs, SLICE_NS 20)."""

    def report(self) -> None:
        until = time.perf_counter_ns() + 2 * SLICE_NS
        while time.perf_counter_ns() < until:
            pass
        super().report()


def test_a_request_arriving_during_the_reports_is_read_after_one_turn(loop: asyncio.AbstractEventLoop) -> None:
    """The client answered last sends its next request at once: it must not wait for the whole bunch's telemetry."""
    log: list[str] = []
    queue = ReportQueue(loop)
    responses, responses_in = socket.socketpair()
    requests, requests_in = socket.socketpair()

    def on_response() -> None:
        """The upstream read that answers the bunch's last client, from the loop's poll as in the sidecar; the
        client's next request is on its way at once."""
        responses.recv(16)
        loop.remove_reader(responses.fileno())
        for name in "0123":
            queue.add(_Slow(name, log))
        requests_in.send(b"GET")

    def on_request() -> None:
        requests.recv(16)
        loop.remove_reader(requests.fileno())
        log.append("read")

    async def main() -> None:
        loop.add_reader(responses.fileno(), on_response)
        loop.add_reader(requests.fileno(), on_request)
        responses_in.send(b"HTTP")
        for _ in range(100):
            await asyncio.sleep(0.001)
            if len(log) == 5:
                break

    try:
        loop.run_until_complete(main())
    finally:
        for sock in (responses, responses_in, requests, requests_in):
            sock.close()
    assert log == ["report 0", "read", "report 1", "report 2", "report 3"]


def test_idle_work_goes_in_turns_until_done(loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture,
                                            ) -> None:
    """The listener's idle work (spans made ahead) runs after reports, a turn at a time while it wants more; a
    failing one is logged and stops; without new reports it does not run again."""
    log: list[str] = []
    queue = ReportQueue(loop)
    wants = [True, True, False, True]       # the last: a failing call after the next report

    def idle(until: int) -> bool:
        assert until > 0
        log.append("idle")
        if len(wants) == 1:
            raise RuntimeError("no spans today")
        return wants.pop(0)

    queue.idle = idle

    async def main() -> None:
        queue.add(_Finished("a", log))
        await asyncio.sleep(0.01)
        log.append("quiet")
        await asyncio.sleep(0.01)
        queue.add(_Finished("b", log))
        await asyncio.sleep(0.01)
        queue.add(_Finished("c", log))
        await asyncio.sleep(0.01)

    with caplog.at_level(logging.ERROR, logger="meshtrace.proxy"):
        loop.run_until_complete(main())
    assert log == ["report a", "idle", "idle", "idle", "quiet", "report b", "idle", "report c", "idle"]
    assert caplog.text.count("preparing for the next requests failed") == 2


def test_a_failing_report_is_logged_and_the_rest_still_run(loop: asyncio.AbstractEventLoop,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    log: list[str] = []
    queue = ReportQueue(loop)

    def batch() -> None:
        queue.add(_Finished("a", log))
        queue.add(_Finished("b", log, fail=True))
        queue.add(_Finished("c", log))

    async def main() -> None:
        loop.call_soon(batch)
        await asyncio.sleep(0.01)

    with caplog.at_level(logging.ERROR, logger="meshtrace.proxy"):
        loop.run_until_complete(main())
    assert log == ["report a", "report c"]
    assert "recording a hop failed" in caplog.text
    assert "b cannot be recorded" in caplog.text


def test_close_reports_what_is_queued_and_then_each_at_once(loop: asyncio.AbstractEventLoop) -> None:
    """A closing listener's last reports must not wait for a turn of the loop that may never come."""
    log: list[str] = []
    queue = ReportQueue(loop)
    queue.add(_Finished("a", log))
    queue.add(_Finished("b", log))
    assert log == []                        # queued: the loop has not turned
    queue.close()
    assert log == ["report a", "report b"]
    queue.add(_Finished("c", log))
    assert log == ["report a", "report b", "report c"]
    loop.run_until_complete(asyncio.sleep(0.01))   # the run scheduled before close finds nothing left
    assert log == ["report a", "report b", "report c"]


def test_reports_wait_until_the_last_response_in_flight_is_out(loop: asyncio.AbstractEventLoop) -> None:
    """A bunch answered over several turns of the loop: its reports run together after the last response."""
    log: list[str] = []
    queue = ReportQueue(loop)
    queue.in_flight = 3

    def answer(name: str) -> None:
        log.append(f"write {name}")
        queue.in_flight -= 1
        queue.add(_Finished(name, log))

    async def main() -> None:
        for name in "abc":
            loop.call_soon(answer, name)
            await asyncio.sleep(0)
            await asyncio.sleep(0)          # turns of the loop between the responses
        await asyncio.sleep(0.001)

    loop.run_until_complete(main())
    assert log == ["write a", "write b", "write c", "report a", "report b", "report c"]


def test_a_request_that_stays_in_flight_delays_reports_by_max_delay_at_most(
        loop: asyncio.AbstractEventLoop) -> None:
    """A long download or a WebSocket in flight must not hold the other requests' metrics back."""
    log: list[str] = []
    queue = ReportQueue(loop)
    queue.in_flight = 1                     # never finishes here
    reported_at: list[float] = []

    class _Timed(_Finished):
        def report(self) -> None:
            reported_at.append(time.monotonic())
            super().report()

    async def main() -> float:
        queued_at = time.monotonic()
        queue.add(_Timed("a", log))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert log == []                    # the loop's next turns: still waiting for the one in flight
        for _ in range(1000):
            if log:
                break
            await asyncio.sleep(0.001)
        return queued_at

    queued_at = loop.run_until_complete(main())
    assert log == ["report a"]
    # MAX_DELAY after it was queued (the loop's timers round to its millisecond clock), not a second later.
    assert MAX_DELAY / 2 <= reported_at[0] - queued_at < 1.0


def test_a_full_queue_reports_without_waiting(loop: asyncio.AbstractEventLoop) -> None:
    """At saturation something is always in flight: every MAX_QUEUED reports run on the loop's next turn."""
    log: list[str] = []
    queue = ReportQueue(loop)
    queue.in_flight = 50

    async def main() -> None:
        for i in range(MAX_QUEUED):
            queue.add(_Finished(str(i), log))
        assert log == []
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    loop.run_until_complete(main())
    assert log == [f"report {i}" for i in range(MAX_QUEUED)]


def test_every_way_an_exchange_ends_takes_it_out_of_flight() -> None:
    """A count left above zero would hold every later report back by MAX_DELAY: each ending must undo its start."""
    release = threading.Event()

    def upstream(sock: socket.socket) -> None:
        head = read_head(sock)
        path = head.split(b" ", 2)[1]
        if path == b"/ok":
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        elif path == b"/cut":           # the head, then the connection drops mid-body: UC after the head
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
        elif path in (b"/hang", b"/slow"):  # no answer before the route timeout (504 UT) or the client leaves (DC)
            release.wait(5)
        # /drop: closed with no answer at all: 503 UC

    server = RawServer(upstream)
    proxy = SidecarThread(sidecar_config(server.port, upstream_timeout=0.3))
    port = proxy.port()
    try:
        answers = {path: raw_exchange(port, b"GET %s HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" % path,
                                         timeout=3)
                   for path in (b"/ok", b"/cut", b"/hang", b"/drop")}
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
            time.sleep(0.1)             # in flight upstream when the client goes away
        malformed = raw_exchange(port, b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
        connect = raw_exchange(port, b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nConnection: close\r\n\r\n", timeout=3)
        hops = proxy.wait_hops(7)

        async def in_flight() -> list[int]:
            return [listener.context.reports.in_flight for listener in proxy.sidecar.listeners]

        assert proxy.call(in_flight()) == [0]
    finally:
        release.set()
        proxy.close()
        server.close()
    assert answers[b"/ok"].startswith(b"HTTP/1.1 200 ")
    assert answers[b"/hang"].startswith(b"HTTP/1.1 504 ")
    assert answers[b"/drop"].startswith(b"HTTP/1.1 503 ")
    assert malformed.startswith(b"HTTP/1.1 400 ")
    assert connect.startswith(b"HTTP/1.1 405 ")
    # /ok, /cut, /hang, /drop, /slow, the malformed request (answered, never forwarded), CONNECT (405)
    assert sorted(hop.response_flags for hop in hops) == sorted(["-", "UC", "UT", "UC", "DC", "DPE", "-"])
