"""TCP pass-through over real sockets: byte integrity both ways, half-close, backpressure, resets, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvloop
from prometheus_client.parser import text_string_to_metric_families

from meshtrace.proxy.hop import Hop, Workload
from meshtrace.proxy.metrics import IstioMetrics
from meshtrace.proxy.tcp import serve_tcp

LOCAL = Workload(workload="db-v1", namespace="default", app="db", version="v1", service="db")
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Run = Callable[[Coroutine[Any, Any, None]], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    """Run a test on both event loops: the proxy runs on uvloop, the tests' defaults on asyncio's."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def runner(main: Coroutine[Any, Any, None]) -> None:
        with asyncio.Runner(loop_factory=factory) as r:
            r.run(main)
    return runner


class Recorder:
    def __init__(self) -> None:
        self.hops: list[Hop] = []

    def on_hop(self, hop: Hop) -> None:
        self.hops.append(hop)


@asynccontextmanager
async def upstream(handler: Handler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@asynccontextmanager
async def proxy(upstream_port: int, metrics: IstioMetrics, recorder: Recorder,
                report_interval: float = 15.0) -> AsyncIterator[int]:
    server = await serve_tcp("127.0.0.1", 0, "127.0.0.1", upstream_port, metrics, observers=[recorder],
                             destination=LOCAL, report_interval=report_interval, connect_timeout=2.0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def tcp_stats(metrics: IstioMetrics) -> dict[str, int]:
    return metrics.stats()


@pytest.mark.parametrize(("up_size", "down_size"), [(0, 0), (1, 0), (0, 1), (65_537, 3),
                                                    (32 * 2**20, 24 * 2**20)])
def test_half_close_and_integrity(run: Run, up_size: int, down_size: int) -> None:
    """The client sends everything and half-closes; only then does the server answer, then closes."""
    rng = random.Random(up_size * 31 + down_size)
    request = rng.randbytes(up_size)
    response = rng.randbytes(down_size)
    seen: dict[str, str] = {}

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        digest = hashlib.sha256()
        while chunk := await reader.read(1 << 16):
            digest.update(chunk)
        seen["request"] = digest.hexdigest()                   # EOF arrived while we can still write
        writer.write(response)
        await writer.drain()
        writer.close()

    async def main() -> None:
        metrics, recorder = IstioMetrics(), Recorder()
        async with upstream(server) as up_port, proxy(up_port, metrics, recorder) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)

            async def send() -> None:
                writer.write(request)
                await writer.drain()
                writer.write_eof()

            sender = asyncio.create_task(send())
            received = await asyncio.wait_for(reader.read(), 60)
            await sender
            writer.close()
            assert len(received) == down_size
            assert hashlib.sha256(received).hexdigest() == hashlib.sha256(response).hexdigest()
            assert seen["request"] == hashlib.sha256(request).hexdigest()
            await wait_for(lambda: len(recorder.hops) == 1)
        hop = recorder.hops[0]
        assert (hop.protocol, hop.request_bytes, hop.response_bytes, hop.response_flags) == (
            "tcp", up_size, down_size, "-")
        assert hop.upstream_address.startswith("127.0.0.1:")
        stats = tcp_stats(metrics)
        assert stats["tcp_downstream_cx_total"] == 1
        assert stats["tcp_downstream_cx_closed"] == 1
        assert stats["tcp_downstream_cx_rx_bytes_total"] == up_size
        assert stats["tcp_downstream_cx_tx_bytes_total"] == down_size
        exported = {(s.name, s.labels["reporter"], s.labels["destination_app"]): s.value
                    for family in text_string_to_metric_families(metrics.render()) for s in family.samples}
        assert exported[("istio_tcp_received_bytes_total", "destination", "db")] == up_size
        assert exported[("istio_tcp_sent_bytes_total", "destination", "db")] == down_size
        assert exported[("istio_tcp_connections_closed_total", "destination", "db")] == 1
    run(main())


def test_full_duplex_echo_with_concurrent_reading(run: Run) -> None:
    """Both directions stream at once (an echo), so each side's flow control is exercised together."""
    payload = random.Random(7).randbytes(16 * 2**20)

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(1 << 16):
            writer.write(chunk)
            await writer.drain()
        writer.close()

    async def main() -> None:
        metrics, recorder = IstioMetrics(), Recorder()
        async with upstream(echo) as up_port, proxy(up_port, metrics, recorder) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)

            async def send() -> None:
                for offset in range(0, len(payload), 1 << 20):
                    writer.write(payload[offset:offset + (1 << 20)])
                    await writer.drain()
                writer.write_eof()

            sender = asyncio.create_task(send())
            echoed = await asyncio.wait_for(reader.read(), 60)
            await sender
            writer.close()
            assert echoed == payload
            await wait_for(lambda: len(recorder.hops) == 1)
        assert recorder.hops[0].request_bytes == recorder.hops[0].response_bytes == len(payload)
    run(main())


def test_a_slow_reader_holds_back_the_upstream(run: Run) -> None:
    """While the client reads nothing, the upstream can push only socket buffers' worth, not everything."""
    total = 256 * 2**20
    accepted = [0]

    async def firehose(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chunk = b"x" * (1 << 16)
        try:
            while accepted[0] < total:
                writer.write(chunk)
                await writer.drain()
                accepted[0] += len(chunk)
        except ConnectionError:
            pass
        writer.close()

    async def main() -> None:
        metrics, recorder = IstioMetrics(), Recorder()
        async with upstream(firehose) as up_port, proxy(up_port, metrics, recorder) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 16)
            await asyncio.sleep(0.5)
            stalled_at = accepted[0]
            await asyncio.sleep(0.3)
            assert accepted[0] == stalled_at                   # the upstream is stuck in drain()
            assert stalled_at < 64 * 2**20                     # kernel buffers + one proxy buffer, not 256 MB
            drained = 0
            while chunk := await reader.read(1 << 20):
                drained += len(chunk)
            assert drained == total                            # and it all arrives once the client reads
            writer.close()
    run(main())


def test_upstream_down_is_uf_and_closes_the_client(run: Run) -> None:
    async def main() -> None:
        metrics, recorder = IstioMetrics(), Recorder()
        async with upstream(lambda r, w: asyncio.sleep(0)) as dead_port:
            pass                                               # closed again: nothing listens there now
        async with proxy(dead_port, metrics, recorder) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await asyncio.wait_for(reader.read(), 5) == b""      # a clean close
            writer.close()
            # A client that already sent bytes (never read: there was nowhere to send them) may get a reset
            # instead, as the kernel does for a socket closed with unread data; either way it is not left hanging.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"hello")
            with contextlib.suppress(ConnectionResetError):
                assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            await wait_for(lambda: len(recorder.hops) == 2)
        hop = recorder.hops[0]
        assert hop.response_flags == "UF"
        assert hop.upstream_address == ""
        text = metrics.render()
        assert 'response_flags="UF"' in text
        stats = metrics.stats()
        assert (stats["tcp_upstream_cx_connect_fail"], stats["tcp_downstream_cx_closed"]) == (2, 2)
    run(main())


def test_client_reset_is_passed_on_and_flagged(run: Run) -> None:
    upstream_saw: list[str] = []

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.read(1 << 16):
                pass
            upstream_saw.append("eof")
        except ConnectionError:
            upstream_saw.append("reset")
        writer.close()

    async def main() -> None:
        metrics, recorder = IstioMetrics(), Recorder()
        async with upstream(sink) as up_port, proxy(up_port, metrics, recorder) as port:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"partial")
            await writer.drain()
            await asyncio.sleep(0.1)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()                           # with linger 0: RST, not FIN
            await wait_for(lambda: len(recorder.hops) == 1)
            await wait_for(lambda: bool(upstream_saw))
        assert recorder.hops[0].response_flags == "DC"
        assert upstream_saw == ["reset"]
    run(main())


def test_long_connections_report_bytes_before_closing(run: Run) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(1 << 16):
            writer.write(chunk)
        writer.close()

    async def main() -> None:
        metrics, recorder = IstioMetrics(), Recorder()
        async with upstream(echo) as up_port, proxy(up_port, metrics, recorder, report_interval=0.05) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            await wait_for(lambda: metrics.stats()["tcp_downstream_cx_rx_bytes_total"] == 4)
            stats = metrics.stats()
            assert (stats["tcp_downstream_cx_tx_bytes_total"], stats["tcp_downstream_cx_active"]) == (4, 1)
            writer.write_eof()
            assert await reader.read() == b""
            writer.close()
            await wait_for(lambda: len(recorder.hops) == 1)
        stats = metrics.stats()
        assert (stats["tcp_downstream_cx_rx_bytes_total"], stats["tcp_downstream_cx_closed"]) == (4, 1)
    run(main())


def test_a_failing_observer_does_not_break_the_connection(run: Run) -> None:
    class Broken:
        def on_hop(self, hop: Hop) -> None:
            raise RuntimeError("observer bug")

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read())
        writer.close()

    async def main() -> None:
        recorder = Recorder()
        async with upstream(echo) as up_port:
            server = await serve_tcp("127.0.0.1", 0, "127.0.0.1", up_port, None, observers=[Broken(), recorder])
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"abc")
            writer.write_eof()
            assert await reader.read() == b"abc"
            writer.close()
            await wait_for(lambda: len(recorder.hops) == 1)
            server.close()
    run(main())
