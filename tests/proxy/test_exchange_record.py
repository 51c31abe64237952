"""The hop record an exchange leaves behind: every field, as observers (metrics, access log, spans) read it."""

from __future__ import annotations

import dataclasses
import http.client
import socket

from proxy_harness import SidecarThread, UpstreamServer

from meshtrace.proxy.hop import Hop, Workload


def _unset_fields(hop: Hop) -> list[str]:
    unset = []
    for field in dataclasses.fields(Hop):
        try:
            getattr(hop, field.name)
        except AttributeError:
            unset.append(field.name)
    return unset


def test_every_field_of_the_hop_is_set(sidecar: SidecarThread) -> None:
    # The exchange fills its Hop field by field, without the dataclass __init__ (much cheaper): a field added to
    # Hop and not to the exchange would be missing, and every observer reading it would fail.
    conn = http.client.HTTPConnection("127.0.0.1", sidecar.port(), timeout=10)
    conn.request("GET", "/")
    conn.getresponse().read()
    conn.close()
    with socket.create_connection(("127.0.0.1", sidecar.port()), timeout=10) as sock:  # answered by the proxy
        sock.sendall(b"CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 405 ")
    forwarded, local = sidecar.wait_hops(2)
    assert (forwarded.status, local.status) == (200, 405)
    assert _unset_fields(forwarded) == []
    assert _unset_fields(local) == []


def test_a_forwarded_request_is_recorded_field_by_field(sidecar: SidecarThread, upstream: UpstreamServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", sidecar.port(), timeout=10)
    conn.request("POST", "/sha?x=1", body=b"12345", headers={"User-Agent": "probe/1", "X-Request-Id": "rid-7"})
    response = conn.getresponse()
    body = response.read()
    (hop,) = sidecar.wait_hops(1)
    assert (hop.direction, hop.protocol, hop.scheme, hop.method, hop.path) == (
        "inbound", "HTTP/1.1", "http", "POST", "/sha?x=1")
    assert (hop.authority, hop.user_agent, hop.request_id) == (f"127.0.0.1:{sidecar.port()}", "probe/1", "rid-7")
    assert hop.downstream_address == f"127.0.0.1:{conn.sock.getsockname()[1]}"
    assert hop.upstream_address == f"127.0.0.1:{upstream.port}"
    assert (hop.upstream_cluster, hop.route_name) == (f"inbound|{upstream.port}||", "default")
    assert (hop.status, hop.response_flags, hop.attempts) == (200, "-", 1)
    assert (hop.request_bytes, hop.response_bytes) == (5, len(body))
    assert hop.duration_ms >= 0
    assert hop.upstream_service_time_ms is not None
    assert hop.source == Workload()             # no peer header: nothing known about the caller
    assert (hop.trace_id, hop.span_id) == ("", "")            # the test sidecar does not trace
    conn.close()
