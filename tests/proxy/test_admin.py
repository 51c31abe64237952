"""Admin endpoints over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from meshtrace.proxy.admin import AdminServer
from meshtrace.proxy.hop import Hop, Workload
from meshtrace.proxy.metrics import IstioMetrics


class State:
    def __init__(self) -> None:
        self.ready = True
        self.metrics = IstioMetrics()
        self.metrics.on_hop(Hop(direction="inbound", start_time=0.0, status=200, duration_ms=2.0,
                                destination=Workload(app="reviews")))

    def config(self) -> Mapping[str, Any]:
        return {"listeners": [{"address": "127.0.0.1:15006"}], "odd": b"bytes"}

    def stats(self) -> Mapping[str, int]:
        return {"downstream_rq_total": 3, "b_second": 2, "a_first": 1}


def run(test: Callable[[AdminServer, State], Awaitable[None]], **overrides: Any) -> None:
    async def main() -> None:
        state = State()
        kwargs: dict[str, Any] = {"metrics": state.metrics.render, "ready": lambda: state.ready,
                                  "config_dump": state.config, "stats": state.stats}
        kwargs.update(overrides)
        server = AdminServer("127.0.0.1", 0, **kwargs)
        await server.start()
        try:
            await test(server, state)
        finally:
            await server.close()
    asyncio.run(main())


async def raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection; reads the reply to EOF or Content-Length."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    body = b""
    if not request.startswith(b"HEAD"):
        body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 5)
    writer.close()
    return int(status_line.split(" ")[1]), headers, body


def test_metrics_endpoint() -> None:
    async def check(server: AdminServer, state: State) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            reply = await client.get("/metrics")
            assert reply.status_code == 200
            assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
            families = {f.name: f for f in text_string_to_metric_families(reply.text)}
            assert families["istio_requests"].samples[0].value == 1
            assert families["istio_requests"].samples[0].labels["destination_app"] == "reviews"
            assert (await client.get("/stats/prometheus")).text == reply.text
    run(check)


def test_ready_follows_the_callable() -> None:
    async def check(server: AdminServer, state: State) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            reply = await client.get("/ready")
            assert (reply.status_code, reply.text) == (200, "LIVE\n")
            state.ready = False                                   # draining
            reply = await client.get("/ready")
            assert reply.status_code == 503
            assert (await client.get("/healthz")).status_code == 200   # alive while draining
    run(check)


def test_ready_that_raises_is_not_ready() -> None:
    def broken() -> bool:
        raise RuntimeError("boom")

    async def check(server: AdminServer, state: State) -> None:
        status, _, _ = await raw(server.port, b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 503
    run(check, ready=broken)


def test_config_dump_and_stats() -> None:
    async def check(server: AdminServer, state: State) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            dump = await client.get("/config_dump")
            assert dump.headers["content-type"] == "application/json"
            assert dump.json()["listeners"] == [{"address": "127.0.0.1:15006"}]
            assert dump.json()["odd"] == "b'bytes'"              # non-JSON values shown, not fatal
            stats = await client.get("/stats")
            assert stats.text == "a_first: 1\nb_second: 2\ndownstream_rq_total: 3\n"
            as_json = (await client.get("/stats", params={"format": "json"})).json()
            assert {"name": "downstream_rq_total", "value": 3} in as_json["stats"]
    run(check)


def test_unknown_path_lists_the_endpoints() -> None:
    async def check(server: AdminServer, state: State) -> None:
        status, _, body = await raw(server.port, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 404
        for path in ("/metrics", "/ready", "/healthz", "/config_dump", "/stats"):
            assert path.encode() in body
    run(check)


def test_failing_endpoint_is_a_500_and_the_server_lives_on() -> None:
    def broken() -> str:
        raise RuntimeError("registry exploded")

    async def check(server: AdminServer, state: State) -> None:
        status, _, body = await raw(server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 500
        assert b"registry exploded" in body
        status, _, _ = await raw(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200
    run(check, metrics=broken)


def test_methods_head_and_malformed_requests() -> None:
    async def check(server: AdminServer, state: State) -> None:
        port = server.port
        status, headers, _ = await raw(port, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 405
        assert headers["allow"] == "GET, HEAD"
        status, headers, body = await raw(port, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (status, headers["content-length"], body) == (200, "3", b"")
        status, _, _ = await raw(port, b"GARBAGE\r\n\r\n")
        assert status == 400
        status, _, _ = await raw(port, b"GET /stats HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
        assert status == 413
        status, _, _ = await raw(port, b"GET /stats HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n")
        assert status == 431
    run(check)


def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    async def check(server: AdminServer, state: State) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        for _ in range(3):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            assert b"Connection: close" not in head
            assert await reader.readexactly(3) == b"OK\n"
        writer.write(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"Connection: close" in head
        await reader.readexactly(3)
        assert await reader.read() == b""                          # the server closed
        writer.close()
    run(check)


def test_close_ends_idle_connections_and_frees_the_port() -> None:
    async def main() -> None:
        server = AdminServer("127.0.0.1", 0, metrics=str, ready=lambda: True, config_dump=dict, stats=dict)
        await server.start()
        port = server.port
        assert port != 0
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\n\r\n")
        await reader.readuntil(b"OK\n")
        await asyncio.wait_for(server.close(), 5)                  # an idle keep-alive client does not hold it
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        again = AdminServer("127.0.0.1", port, metrics=str, ready=lambda: True, config_dump=dict, stats=dict)
        await again.start()
        await again.close()
    asyncio.run(main())


def test_binds_loopback_by_default() -> None:
    async def main() -> None:
        server = AdminServer(port=0, metrics=str, ready=lambda: True, config_dump=dict, stats=dict)
        await server.start()
        try:
            assert server.host == "127.0.0.1"
            status, _, body = await raw(server.port, b"GET /config_dump HTTP/1.0\r\n\r\n")
            assert (status, json.loads(body)) == (200, {})
        finally:
            await server.close()
    asyncio.run(main())
