"""The floor of any uvloop proxy, for probe_paced_cpu.py: every client connection gets its own upstream connection
and bytes go through blindly both ways (no parsing, no headers, no telemetry).

Run: `.venv/bin/python tests/bench/blind_forwarder.py LISTEN_PORT UPSTREAM_PORT` (both on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import uvloop


class _Upstream(asyncio.Protocol):
    def __init__(self, client: asyncio.Transport) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()


class _Client(asyncio.Protocol):
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.upstream: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)    # uvloop's transports do not subclass asyncio's
        self.transport.pause_reading()      # until the upstream connection is there
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        upstream, _ = await asyncio.get_running_loop().create_connection(
            lambda: _Upstream(self.transport), "127.0.0.1", self.upstream_port)
        self.upstream = upstream
        self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        assert self.upstream is not None
        self.upstream.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()


async def _serve(port: int, upstream_port: int) -> None:
    server = await asyncio.get_running_loop().create_server(lambda: _Client(upstream_port), "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(_serve(int(sys.argv[1]), int(sys.argv[2])))
