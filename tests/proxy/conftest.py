"""Fixtures for the sidecar tests: an upstream app and an in-process sidecar in front of it."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from proxy_harness import SidecarThread, UpstreamServer, sidecar_config

from meshtrace.demo.processes import free_port

MESHTRACE = Path(sys.executable).parent / "meshtrace"


@pytest.fixture
def upstream() -> Iterator[UpstreamServer]:
    server = UpstreamServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def sidecar(upstream: UpstreamServer) -> Iterator[SidecarThread]:
    proxy = SidecarThread(sidecar_config(upstream.port, outbound=None))
    try:
        yield proxy
    finally:
        proxy.close()


def _wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"proxy exited early: {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/ready")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("proxy never became ready")


@pytest.fixture
def proxy_process(upstream: UpstreamServer, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    listen, admin = free_port(), free_port()
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "none", "MESHTRACE_EXPORTER": "none"}
    proc = subprocess.Popen(
        [str(MESHTRACE), "proxy", "--listen", f"127.0.0.1:{listen}", "--upstream", f"127.0.0.1:{upstream.port}",
         "--admin", f"127.0.0.1:{admin}", "--service", "reviews", "--drain-timeout", "5s", "--access-log", ""],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_ready(admin, proc)
        yield proc, listen, admin
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
