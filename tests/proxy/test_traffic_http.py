"""Traffic rules through a running sidecar's outbound listener against real upstream servers on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from proxy_harness import SidecarThread, UpstreamServer, sidecar_config
from traffic_support import API, service_entry, subsets_rule

from meshtrace import ConfigError
from meshtrace.demo.processes import free_port
from meshtrace.proxy.config import Address
from meshtrace.proxy.server import Sidecar

VS = API + "kind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n"


@pytest.fixture
def apps() -> Iterator[tuple[UpstreamServer, UpstreamServer]]:
    v1, v2 = UpstreamServer(), UpstreamServer()
    try:
        yield v1, v2
    finally:
        v1.close()
        v2.close()


def start(tmp_path: Path, http: str, apps: tuple[UpstreamServer, UpstreamServer]) -> SidecarThread:
    v1, v2 = apps
    rules = tmp_path / "rules.yaml"
    rules.write_text("---\n".join([
        VS + http,
        service_entry("reviews", [("127.0.0.1", v1.port, "v1"), ("127.0.0.1", v2.port, "v2")], port=9080),
        subsets_rule("reviews", ["v1", "v2"]),
    ]))
    return SidecarThread(sidecar_config(None, outbound=Address("127.0.0.1", 0), rules=str(rules)))


def get(proxy: SidecarThread, path: str, headers: dict[str, str] | None = None,
        method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port("outbound"), timeout=10)
    try:
        conn.request(method, path, headers={"Host": "reviews:9080", **(headers or {})})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_header_match_routes_to_the_subset_and_edits_headers(tmp_path: Path,
                                                             apps: tuple[UpstreamServer, UpstreamServer]) -> None:
    proxy = start(tmp_path, """\
  - match: [{headers: {end-user: {exact: jason}}}]
    rewrite: {uri: /sha}
    headers:
      request: {set: {x-route: jason}, remove: [x-secret]}
      response: {set: {x-served: v2}, remove: [keep-alive]}
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
""", apps)
    v1, v2 = apps
    try:
        status, headers, body = get(proxy, "/page?x=1", {"end-user": "jason", "x-secret": "s"})
        assert status == 200
        assert headers["x-served"] == "v2"
        seen = json.loads(body)
        assert seen["path"] == "/sha?x=1"
        assert seen["headers"]["x-route"] == "jason"
        assert "x-secret" not in seen["headers"]
        assert len(v2.requests) == 1
        assert not v1.requests
        status, headers, _ = get(proxy, "/page")
        assert status == 200
        assert "x-served" not in headers
        assert len(v1.requests) == 1
        hops = proxy.wait_hops(2)
        assert [h.upstream_cluster for h in hops] == ["outbound|9080|v2|reviews", "outbound|9080|v1|reviews"]
        assert hops[0].upstream_address == f"127.0.0.1:{v2.port}"
    finally:
        proxy.close()


def test_weighted_split_over_real_upstreams(tmp_path: Path, apps: tuple[UpstreamServer, UpstreamServer]) -> None:
    proxy = start(tmp_path, """\
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews, subset: v2}, weight: 20}
""", apps)
    v1, v2 = apps
    try:
        statuses = Counter(get(proxy, "/")[0] for _ in range(300))
        assert statuses == {200: 300}
        assert 240 - 40 < len(v1.requests) < 240 + 40
        assert len(v1.requests) + len(v2.requests) == 300
    finally:
        proxy.close()


def test_abort_and_delay_faults_with_flags(tmp_path: Path, apps: tuple[UpstreamServer, UpstreamServer]) -> None:
    proxy = start(tmp_path, """\
  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /delay}}]
    fault: {delay: {fixedDelay: 300ms, percentage: {value: 100}}}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /nopercent}}]
    fault: {abort: {httpStatus: 500}}
    route: [{destination: {host: reviews, subset: v1}}]
""", apps)
    v1, _ = apps
    try:
        status, _, body = get(proxy, "/abort")
        assert status == 418
        assert b"fault filter abort" in body
        assert not v1.requests
        started = time.monotonic()
        status, _, _ = get(proxy, "/delay")
        assert status == 200
        assert time.monotonic() - started >= 0.3
        assert len(v1.requests) == 1
        assert get(proxy, "/nopercent")[0] == 200                 # no percentage: no fault
        assert get(proxy, "/none")[0] == 404                      # named host, no rule matched: NR
        hops = proxy.wait_hops(4)
        assert [(h.status, h.response_flags) for h in hops] == [(418, "FI"), (200, "DI"), (200, "-"), (404, "NR")]
        # An abort never reaches an endpoint: it is still the faulted service's request, not an address's.
        assert hops[0].destination.service == "reviews"
    finally:
        proxy.close()


def test_subset_without_endpoints_is_503_uh(tmp_path: Path, apps: tuple[UpstreamServer, UpstreamServer]) -> None:
    v1, _v2 = apps
    rules = tmp_path / "rules.yaml"
    rules.write_text("---\n".join([
        VS + "  - route: [{destination: {host: reviews, subset: v3}}]\n",
        service_entry("reviews", [("127.0.0.1", v1.port, "v1")], port=9080),
        subsets_rule("reviews", ["v1", "v3"]),
    ]))
    proxy = SidecarThread(sidecar_config(None, outbound=Address("127.0.0.1", 0), rules=str(rules)))
    try:
        assert get(proxy, "/")[0] == 503
        assert proxy.wait_hops(1)[0].response_flags == "UH"
    finally:
        proxy.close()


def test_service_entry_without_virtual_service_balances_its_endpoints(
        tmp_path: Path, apps: tuple[UpstreamServer, UpstreamServer]) -> None:
    v1, v2 = apps
    rules = tmp_path / "rules.yaml"
    rules.write_text(service_entry("reviews", [("127.0.0.1", v1.port, "v1"), ("127.0.0.1", v2.port, "v2")],
                                   port=9080))
    proxy = SidecarThread(sidecar_config(None, outbound=Address("127.0.0.1", 0), rules=str(rules)))
    try:
        assert [get(proxy, "/")[0] for _ in range(10)] == [200] * 10
        assert len(v1.requests) == len(v2.requests) == 5
        dump = proxy.sidecar.config_dump()
        assert dump["rules"]["service_entries"][0]["hosts"] == ["reviews"]
    finally:
        proxy.close()


def test_invalid_rules_refuse_to_start(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(VS + "  - route: [{destination: {host: reviews}}]\n    timeout: never\n")
    sidecar = Sidecar(sidecar_config(None, outbound=Address("127.0.0.1", free_port()), rules=str(rules)))
    import asyncio

    with pytest.raises(ConfigError, match=r"field 'spec\.http\[0\]\.timeout'"):
        asyncio.run(sidecar.start())
