"""The hop record an exchange leaves behind: every field, as observers (metrics, access log, spans) read it."""

from __future__ import annotations

import dataclasses
import http.client

from proxy_harness import SidecarThread, UpstreamServer

from meshtrace.proxy.exchange import HOP_FIELDS
from meshtrace.proxy.hop import Hop, Workload


def test_positional_field_order_is_hops_own() -> None:
    # The exchange builds its Hop by position (much cheaper than 24 keywords): a field moved or inserted in Hop
    # would otherwise silently land in the wrong place.
    names = tuple(field.name for field in dataclasses.fields(Hop))
    assert names[:len(HOP_FIELDS)] == HOP_FIELDS
    assert all(field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
               for field in dataclasses.fields(Hop)[len(HOP_FIELDS):])


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
