"""Non-HTTP ports configured with `tcp` pass through the sidecar byte for byte."""

from __future__ import annotations

import socket

from proxy_harness import RawServer, SidecarThread, sidecar_config

from meshtrace.demo.processes import free_port
from meshtrace.proxy.config import Address, load_config


def test_tcp_port_passes_bytes_and_reports_a_tcp_hop() -> None:
    def echo(sock: socket.socket) -> None:
        while data := sock.recv(65536):
            sock.sendall(data[::-1])

    server = RawServer(echo)
    listen = free_port()
    pair = (Address("127.0.0.1", listen), Address("127.0.0.1", server.port))
    proxy = SidecarThread(sidecar_config(None, tcp=(pair,)))
    try:
        with socket.create_connection(("127.0.0.1", listen), timeout=5) as sock:
            sock.sendall(b"\x00binary\xff")
            got = b""
            for _ in range(50):
                got += sock.recv(100)
                if len(got) >= 8:
                    break
            assert got == b"\xffyranib\x00"
        hop = proxy.wait_hops(1)[0]
        assert hop.protocol == "tcp"
        assert hop.request_bytes == hop.response_bytes == 8
    finally:
        proxy.close()
        server.close()


def test_tcp_pairs_from_flags_and_environment() -> None:
    config = load_config({"tcp": ["127.0.0.1:1=127.0.0.1:2"]}, environ={})
    assert config.tcp == ((Address("127.0.0.1", 1), Address("127.0.0.1", 2)),)
    config = load_config({}, environ={"MESHTRACE_PROXY_TCP": "127.0.0.1:1=127.0.0.1:2,127.0.0.1:3=127.0.0.1:4"})
    assert len(config.tcp) == 2
