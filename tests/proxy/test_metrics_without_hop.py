"""The Istio metrics count straight from the exchange (`IstioMetrics.count_http`), with no Hop made when nothing
else reads one: the series must come out exactly as counting the same requests' Hops with `on_hop` does."""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
from collections.abc import Iterator, Sequence

import pytest
import uvloop
from proxy_harness import Recorder, UpstreamServer, sidecar_config

from meshtrace.proxy.hop import HopObserver
from meshtrace.proxy.metrics import IstioMetrics
from meshtrace.proxy.server import Sidecar


class _Served:
    """A Sidecar with the given observers on a uvloop loop in a daemon thread."""

    def __init__(self, upstream_port: int, observers: Sequence[HopObserver]) -> None:
        self.sidecar = Sidecar(sidecar_config(upstream_port, outbound=None), observers=observers)
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.sidecar.start(), self.loop).result(10)

    def close(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.sidecar.close(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture
def served(upstream: UpstreamServer) -> Iterator[list[_Served]]:
    made: list[_Served] = []
    yield made
    for one in made:
        one.close()


def _traffic(port: int) -> None:
    """Forwarded 200s (with and without a body), upstream 404 and 503, and a local 405 (CONNECT)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for method, path, body in (("GET", "/sha", None), ("POST", "/sha", b"12345"), ("GET", "/status/404", None),
                               ("GET", "/status/503", None), ("GET", "/sha", None)):
        conn.request(method, path, body=body)
        conn.getresponse().read()
    conn.close()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 405 ")


def _without_durations(text: str) -> list[str]:
    # Durations differ from run to run; every other line (counts, labels, byte buckets) must not.
    return [line for line in text.splitlines() if "istio_request_duration_milliseconds" not in line]


def _settled(metrics: IstioMetrics, requests: int) -> str:
    """The metrics once `requests` are counted (a hop is counted just after its response is written)."""
    for _ in range(500):
        if metrics.stats()["downstream_rq_total"] >= requests:
            break
        threading.Event().wait(0.01)
    return metrics.render()


def test_metrics_alone_count_what_the_hops_say(upstream: UpstreamServer, served: list[_Served]) -> None:
    alone = IstioMetrics()                              # the only observer: no Hop is made for it
    beside, recorder = IstioMetrics(), Recorder()       # beside an observer that needs the Hop
    served.append(_Served(upstream.port, [alone]))
    served.append(_Served(upstream.port, [beside, recorder]))
    for one in served:
        _traffic(one.sidecar.port("inbound"))
    from_hops = IstioMetrics()
    for _ in range(500):
        if len(recorder.hops) >= 6:
            break
        threading.Event().wait(0.01)
    for hop in recorder.hops:
        from_hops.on_hop(hop)
    assert sorted((hop.status, hop.response_flags) for hop in recorder.hops) == [
        (200, "-"), (200, "-"), (200, "-"), (404, "-"), (405, "-"), (503, "-")]
    expected = _without_durations(from_hops.render())
    assert 'response_code="404"' in "\n".join(expected)
    assert _without_durations(_settled(alone, 6)) == expected
    assert _without_durations(_settled(beside, 6)) == expected
    assert alone.stats()["downstream_rq_total"] == beside.stats()["downstream_rq_total"] == 6
