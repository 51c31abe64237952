"""A real Jaeger v2 for tests: start the cached binary on free loopback ports and query its HTTP API."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshtrace.demo.processes import free_port

CONFIG = Path(__file__).parent / "e2e" / "jaeger-config.yaml"
BUILD_SCRIPT = Path(__file__).parent / "e2e" / "build_jaeger.sh"


def find_binary() -> Path | None:
    """The Jaeger binary from MESHTRACE_JAEGER_BIN, or the one build_jaeger.sh caches; None if neither exists."""
    explicit = os.environ.get("MESHTRACE_JAEGER_BIN")
    if explicit and Path(explicit).is_file():
        return Path(explicit)
    version = os.environ.get("JAEGER_VERSION", "v1.76.0")
    cache = Path(os.environ.get("MESHTRACE_CACHE") or
                 Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "meshtrace")
    cached = cache / f"jaeger-{version}"
    return cached if cached.is_file() else None


@dataclass
class Jaeger:
    """A running Jaeger process and the loopback URLs of its intakes and query API."""

    process: subprocess.Popen[bytes]
    query_port: int
    otlp_http_port: int
    otlp_grpc_port: int
    zipkin_port: int
    health_port: int
    log_path: Path
    _closed: bool = field(default=False, repr=False)

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.query_port}"

    @property
    def otlp_endpoint(self) -> str:
        """Base URL for OTEL_EXPORTER_OTLP_ENDPOINT (the exporter appends /v1/traces)."""
        return f"http://127.0.0.1:{self.otlp_http_port}"

    @property
    def zipkin_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.zipkin_port}/api/v2/spans"

    def api(self, path: str) -> Any:
        """GET a query-API path and return its `data` member; None on 404."""
        try:
            with urllib.request.urlopen(self.query_url + path, timeout=5) as response:
                return json.load(response)["data"]
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        data = self.api(f"/api/traces/{trace_id}")
        return data[0] if data else None

    def wait_for_trace(self, trace_id: str, min_spans: int = 1, timeout: float = 20.0) -> dict[str, Any]:
        """Poll until the trace has at least min_spans spans; fail with what did arrive."""
        deadline = time.monotonic() + timeout
        found: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            found = self.trace(trace_id)
            if found and len(found["spans"]) >= min_spans:
                # Spans of one trace can arrive in several batches: give stragglers a moment.
                time.sleep(0.3)
                return self.trace(trace_id) or found
            time.sleep(0.2)
        got = len(found["spans"]) if found else 0
        raise AssertionError(f"trace {trace_id}: {got} spans in Jaeger after {timeout}s, wanted {min_spans}")

    def traces(self, service: str, limit: int = 100, **params: str) -> list[dict[str, Any]]:
        query = "&".join(f"{k}={urllib.parse.quote(v)}" for k, v in {"service": service, **params}.items())
        data = self.api(f"/api/traces?{query}&limit={limit}&lookback=1h")
        return list(data or [])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start(binary: Path, log_dir: Path, timeout: float = 60.0) -> Jaeger:
    ports = {name: free_port() for name in ("query", "query_grpc", "otlp_grpc", "otlp_http", "zipkin", "health")}
    env = dict(os.environ)
    env.update({
        "JAEGER_QUERY_PORT": str(ports["query"]),
        "JAEGER_QUERY_GRPC_PORT": str(ports["query_grpc"]),
        "JAEGER_OTLP_GRPC_PORT": str(ports["otlp_grpc"]),
        "JAEGER_OTLP_HTTP_PORT": str(ports["otlp_http"]),
        "JAEGER_ZIPKIN_PORT": str(ports["zipkin"]),
        "JAEGER_HEALTH_PORT": str(ports["health"]),
    })
    log_path = log_dir / "jaeger.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([str(binary), f"--config={CONFIG}"], env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    jaeger = Jaeger(process, ports["query"], ports["otlp_http"], ports["otlp_grpc"], ports["zipkin"],
                    ports["health"], log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Jaeger exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports['health']}/status", timeout=1):
                pass
            jaeger.api("/api/services")
            return jaeger
        except (OSError, urllib.error.URLError):
            time.sleep(0.2)
    jaeger.close()
    raise RuntimeError(f"Jaeger not healthy after {timeout}s:\n{log_path.read_text()[-3000:]}")
