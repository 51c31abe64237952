"""End to end through two sidecars into a real Jaeger: client -> sidecar A outbound -> sidecar B inbound -> app B.

App B is the e2e Flask backend under `meshtrace-run`; each sidecar is a `meshtrace proxy` process. One request
with a W3C parent must come out as one trace whose spans chain: client -> A's CLIENT span -> B's SERVER span
-> the app's server span, with four distinct span ids.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshtrace.demo.processes import free_port

import jaeger_process

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "e2e"
BIN = Path(sys.executable).parent
TRACE = "5bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"

pytestmark = pytest.mark.jaeger


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"not listening on {port}:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def mesh(jaeger: jaeger_process.Jaeger, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    workdir = tmp_path_factory.mktemp("sidecar-e2e")
    env = {**os.environ, "MESHTRACE_EXPORTER": "otlp", "OTEL_TRACES_EXPORTER": "otlp",
           "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100",
           "PYTHONUNBUFFERED": "1"}
    for name in ("OTEL_SERVICE_NAME", "OTEL_PROPAGATORS", "MESHTRACE_PROPAGATORS", "PYTHONPATH"):
        env.pop(name, None)
    ports = {name: free_port() for name in ("app", "inbound", "outbound")}
    processes: list[subprocess.Popen[bytes]] = []

    def start(name: str, command: list[str], port: int, cwd: Path) -> None:
        log = workdir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        processes.append(process)
        _wait_listening(port, process, log)

    try:
        start("app-b", [str(BIN / "meshtrace-run"), "--service-name", "reviews", sys.executable, "backend.py",
                        "--port", str(ports["app"])], ports["app"], EXAMPLES)
        start("sidecar-b", [str(BIN / "meshtrace"), "proxy", "--service", "reviews", "--listen",
                            f"127.0.0.1:{ports['inbound']}", "--upstream", f"127.0.0.1:{ports['app']}"],
              ports["inbound"], workdir)
        start("sidecar-a", [str(BIN / "meshtrace"), "proxy", "--service", "productpage", "--outbound",
                            f"127.0.0.1:{ports['outbound']}"], ports["outbound"], workdir)
        yield ports
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def _tag(span: dict[str, Any], key: str) -> Any:
    return next((tag["value"] for tag in span["tags"] if tag["key"] == key), None)


def test_trace_through_two_sidecars_is_one_chain(jaeger: jaeger_process.Jaeger, mesh: dict[str, int]) -> None:
    proxy = urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{mesh['outbound']}"})
    opener = urllib.request.build_opener(proxy)
    request = urllib.request.Request(f"http://127.0.0.1:{mesh['inbound']}/items/7",
                                     headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
    with opener.open(request, timeout=10) as response:
        body = json.load(response)
    assert body["item"] == 7
    assert body["headers"]["traceparent"].split("-")[1] == TRACE
    assert "x-request-id" in body["headers"]

    trace = jaeger.wait_for_trace(TRACE, min_spans=3)
    spans = trace["spans"]
    services = {pid: process["serviceName"] for pid, process in trace["processes"].items()}
    by_kind = {(services[s["processID"]], _tag(s, "span.kind")): s for s in spans}
    client = by_kind[("productpage-sidecar", "client")]
    server = by_kind[("reviews-sidecar", "server")]
    app = by_kind[("reviews", "server")]

    def parent(span: dict[str, Any]) -> str | None:
        refs = [r for r in span["references"] if r["refType"] == "CHILD_OF"]
        return refs[0]["spanID"] if refs else None

    assert parent(client) == PARENT
    assert parent(server) == client["spanID"]
    assert parent(app) == server["spanID"]
    assert len({PARENT, client["spanID"], server["spanID"], app["spanID"]}) == 4
    for span in (client, server):
        assert _tag(span, "component") == "proxy"
        assert _tag(span, "http.status_code") == 200
        assert _tag(span, "response_flags") == "-"
        assert _tag(span, "guid:x-request-id") == body["headers"]["x-request-id"]
    assert client["operationName"] == f"127.0.0.1:{mesh['inbound']}/*"
    assert _tag(client, "upstream_cluster") == f"outbound|{mesh['inbound']}||127.0.0.1"
    assert _tag(server, "upstream_cluster") == f"inbound|{mesh['app']}||"
