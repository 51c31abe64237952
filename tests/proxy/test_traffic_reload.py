"""Hot reload of the rules: a valid change applies to new requests with none failing; a bad one is refused."""

from __future__ import annotations

import http.client
import os
import threading
import time
from pathlib import Path

from proxy_harness import SidecarThread, UpstreamServer, sidecar_config
from traffic_support import API, service_entry, subsets_rule

from meshtrace import ConfigError
from meshtrace.proxy.config import Address
from meshtrace.proxy.reload import RulesReloader


def rules_text(subset: str, v1: int, v2: int) -> str:
    return "---\n".join([
        API + "kind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [reviews]\n  http:\n"
        f"  - route: [{{destination: {{host: reviews, subset: {subset}}}}}]\n",
        service_entry("reviews", [("127.0.0.1", v1, "v1"), ("127.0.0.1", v2, "v2")], port=9080),
        subsets_rule("reviews", ["v1", "v2"]),
    ])


def touch_later(path: Path, text: str) -> None:
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))   # mtime surely differs


def test_reloader_applies_valid_changes_and_keeps_the_old_on_errors(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("a")
    applied: list[str] = []

    def build() -> str:
        text = path.read_text()
        if text.startswith("bad"):
            raise ConfigError("broken", source=str(path), line=1, field="spec")
        return text

    reloader = RulesReloader(path, build, applied.append)
    assert not reloader.check()                           # nothing changed
    touch_later(path, "b")
    assert not reloader.check()                           # a change is read once it holds still
    assert reloader.check()
    assert applied == ["b"]
    touch_later(path, "bad")
    assert not reloader.check()
    assert not reloader.check()
    assert applied == ["b"]
    assert reloader.last_error == f"{path}, line 1, field 'spec': broken"
    assert not reloader.check()                           # the same broken file is not re-read
    touch_later(path, "c")
    assert not reloader.check()
    assert reloader.check()
    assert applied == ["b", "c"]
    assert reloader.last_error is None


def test_a_rules_file_caught_mid_write_is_not_applied(tmp_path: Path) -> None:
    # A rewrite truncates, then writes: a check landing in between sees an empty file, which is a valid (empty)
    # rule set. It must not replace the rules in force, even for one poll interval.
    path = tmp_path / "r.yaml"
    path.write_text("routes")
    applied: list[str] = []
    reloader = RulesReloader(path, path.read_text, applied.append)
    path.write_text("")                                   # the truncation, seen by one check
    assert not reloader.check()
    touch_later(path, "new routes")                       # the write completes before the next check
    assert not reloader.check()
    assert reloader.check()
    assert applied == ["new routes"]


def test_reload_under_load_without_failed_requests(tmp_path: Path) -> None:
    v1, v2 = UpstreamServer(), UpstreamServer()
    path = tmp_path / "rules.yaml"
    path.write_text(rules_text("v1", v1.port, v2.port))
    config = sidecar_config(None, outbound=Address("127.0.0.1", 0), rules=str(path))
    proxy = SidecarThread(config)
    assert proxy.sidecar.reloader is not None
    proxy.sidecar.reloader.interval = 0.05           # from the next tick on (the first comes after 1 s)
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port("outbound"), timeout=10)
        while not stop.is_set():
            conn.request("GET", "/", headers={"Host": "reviews:9080"})
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
        conn.close()

    workers = [threading.Thread(target=load) for _ in range(4)]
    try:
        for worker in workers:
            worker.start()
        time.sleep(0.3)
        touch_later(path, rules_text("v2", v1.port, v2.port))
        deadline = time.monotonic() + 5
        while proxy.sidecar.reloader.reloads < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proxy.sidecar.reloader.reloads == 1
        time.sleep(0.3)
        before_bad = len(v2.requests)
        touch_later(path, "apiVersion: networking.istio.io/v1\nkind: VirtualService\nspec: {hostz: []}\n")
        deadline = time.monotonic() + 5
        while proxy.sidecar.reloader.last_error is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
    finally:
        stop.set()
        for worker in workers:
            worker.join(10)
    try:
        dump = proxy.sidecar.config_dump()
        assert "field 'spec.hostz'" in dump["rules_reload"]["last_error"]
        assert dump["rules"]["virtual_services"][0]["name"] == "r"
        assert statuses
        assert set(statuses) == {200}
        assert v1.requests
        assert len(v2.requests) > before_bad > 0
        v1_count = len(v1.requests)
        hops = proxy.wait_hops(len(statuses))
        assert len(hops) == len(statuses)
        assert len(v1.requests) == v1_count
    finally:
        proxy.close()
        v1.close()
        v2.close()
