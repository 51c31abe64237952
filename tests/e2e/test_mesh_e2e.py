"""End to end: Flask (requests) -> Django (httpx) -> Flask, three processes under `meshtrace-run` with no
tracing code, exporting to a real Jaeger. One request from outside, in any header format, is one trace."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from meshtrace.demo.processes import free_port

import jaeger_process

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "e2e"
RUN = Path(sys.executable).parent / "meshtrace-run"
PARENT_ID = "00f067aa0ba902b7"

pytestmark = pytest.mark.jaeger


@dataclass
class Mesh:
    front: str
    processes: list[subprocess.Popen[bytes]]


def wait_listening(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"service exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"service not listening on {port}:\n{log.read_text()[-3000:]}")


def start(name: str, args: list[str], cwd: Path, port: int, *, env: dict[str, str], logs: Path,
          processes: list[subprocess.Popen[bytes]]) -> None:
    log = logs / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen([str(RUN), "--service-name", name, sys.executable, *args],
                                   cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    processes.append(process)
    wait_listening(port, process, log)


def run_mesh(jaeger: jaeger_process.Jaeger, logs: Path, *, asgi: bool) -> Iterator[Mesh]:
    """The three services under meshtrace-run; the Django one under ASGI (uvicorn) when `asgi`."""
    env = dict(os.environ)
    env.update({
        "MESHTRACE_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "PYTHONUNBUFFERED": "1",
    })
    for name in ("OTEL_SERVICE_NAME", "OTEL_PROPAGATORS", "MESHTRACE_PROPAGATORS", "PYTHONPATH"):
        env.pop(name, None)
    ports = [free_port() for _ in range(3)]
    back, mid, front = ports
    processes: list[subprocess.Popen[bytes]] = []
    try:
        start("e2e-backend", ["backend.py", "--port", str(back)], EXAMPLES, back,
              env=env, logs=logs, processes=processes)
        start("e2e-django", ["service.py", "--port", str(mid), "--backend", f"http://127.0.0.1:{back}",
                             *(["--asgi"] if asgi else [])],
              EXAMPLES / "django_mid", mid, env=env, logs=logs, processes=processes)
        start("e2e-front", ["flask_front.py", "--port", str(front), "--mid", f"http://127.0.0.1:{mid}"],
              EXAMPLES, front, env=env, logs=logs, processes=processes)
        yield Mesh(f"http://127.0.0.1:{front}", processes)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def mesh(jaeger: jaeger_process.Jaeger, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    yield from run_mesh(jaeger, tmp_path_factory.mktemp("mesh-logs"), asgi=False)


@pytest.fixture(scope="module")
def asgi_mesh(jaeger: jaeger_process.Jaeger, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    yield from run_mesh(jaeger, tmp_path_factory.mktemp("asgi-mesh-logs"), asgi=True)


def call(url: str, headers: dict[str, str]) -> dict[str, Any]:
    import json

    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=20) as response:
        return json.load(response)  # type: ignore[no-any-return]


def tag(span: dict[str, Any], key: str) -> Any:
    return next((item["value"] for item in span["tags"] if item["key"] == key), None)


@pytest.mark.parametrize("header_format", ["b3", "traceparent", "uber-trace-id"])
def test_one_request_is_one_connected_trace(mesh: Mesh, jaeger: jaeger_process.Jaeger, header_format: str) -> None:
    assert_one_connected_trace(mesh, jaeger, header_format)


def test_django_under_asgi_joins_the_trace(asgi_mesh: Mesh, jaeger: jaeger_process.Jaeger) -> None:
    """The same mesh with the Django service served by uvicorn: its spans are parented as under WSGI."""
    assert_one_connected_trace(asgi_mesh, jaeger, "b3")


def assert_one_connected_trace(mesh: Mesh, jaeger: jaeger_process.Jaeger, header_format: str) -> None:
    trace_id = os.urandom(16).hex()
    request_id = f"rid-{trace_id[:8]}"
    headers = {
        "b3": {"X-B3-TraceId": trace_id, "X-B3-SpanId": PARENT_ID, "X-B3-Sampled": "1"},
        "traceparent": {"traceparent": f"00-{trace_id}-{PARENT_ID}-01"},
        "uber-trace-id": {"uber-trace-id": f"{trace_id}:{PARENT_ID}:0:1"},
    }[header_format]
    body = call(f"{mesh.front}/orders/17", {**headers, "x-request-id": request_id})

    # The last service saw the request id and the trace the first one received, in every format.
    last = body["downstream"]["downstream"]
    assert last["service"] == "backend"
    seen = last["headers"]
    assert seen["x-request-id"] == request_id
    assert seen["traceparent"].split("-")[1] == trace_id
    assert seen["x-b3-traceid"] == trace_id
    assert seen["b3"].split("-")[0] == trace_id
    assert seen["uber-trace-id"].split(":")[0] == trace_id
    assert body["downstream"]["headers"]["x-request-id"] == request_id

    found = jaeger.wait_for_trace(trace_id, min_spans=5)
    spans = {span["spanID"]: span for span in found["spans"]}
    services = {pid: process["serviceName"] for pid, process in found["processes"].items()}

    def one(service: str, kind: str) -> dict[str, Any]:
        matches = [span for span in spans.values()
                   if services[span["processID"]] == service and tag(span, "span.kind") == kind]
        names = [(services[s["processID"]], s["operationName"]) for s in spans.values()]
        assert len(matches) == 1, (service, kind, names)
        found: dict[str, Any] = matches[0]
        return found

    def parent_of(span: dict[str, Any]) -> str | None:
        refs = [ref["spanID"] for ref in span["references"] if ref["refType"] == "CHILD_OF"]
        return refs[0] if refs else None

    front_server = one("e2e-front", "server")
    front_client = one("e2e-front", "client")
    mid_server = one("e2e-django", "server")
    mid_client = one("e2e-django", "client")
    back_server = one("e2e-backend", "server")
    assert len(spans) == 5
    assert front_server["operationName"] == "GET /orders/<int:order_id>"
    assert mid_server["operationName"] == "GET /stock/<int:sku>/"
    assert back_server["operationName"] == "GET /items/<int:item_id>"
    assert parent_of(front_server) == PARENT_ID
    assert parent_of(front_client) == front_server["spanID"]
    assert parent_of(mid_server) == front_client["spanID"]
    assert parent_of(mid_client) == mid_server["spanID"]
    assert parent_of(back_server) == mid_client["spanID"]
    assert tag(back_server, "http.response.status_code") == 200
