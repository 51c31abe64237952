"""`meshtrace traces --jaeger`: the known trace sent to a real Jaeger comes back as the same waterfall."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from views_support import EXPECTED_WATERFALL, TRACE_ID, otlp_lines

from meshtrace.demo.processes import free_port
from meshtrace.views.jaeger_client import JaegerClient, JaegerError

import jaeger_process

MESHTRACE = str(Path(sys.executable).parent / "meshtrace")

pytestmark = pytest.mark.jaeger


@pytest.fixture(scope="module")
def known_trace(jaeger: jaeger_process.Jaeger) -> str:
    t0 = time.time_ns() - 60 * 10**9
    for line in otlp_lines(t0):
        request = urllib.request.Request(f"{jaeger.otlp_endpoint}/v1/traces", data=line.encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
    jaeger.wait_for_trace(TRACE_ID, min_spans=5)
    return jaeger.query_url


def test_trace_by_id_renders_like_the_file(known_trace: str, tmp_path: Path) -> None:
    out = subprocess.run([MESHTRACE, "traces", "--jaeger", known_trace, "--trace-id", TRACE_ID, "--width", "90"],
                         capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.rstrip("\n") == EXPECTED_WATERFALL


def test_traces_by_service(known_trace: str, tmp_path: Path) -> None:
    out = subprocess.run([MESHTRACE, "traces", "--jaeger", known_trace, "--service", "payment", "--limit", "3",
                          "--width", "90"], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.rstrip("\n") == EXPECTED_WATERFALL


def test_service_is_required_and_known_services_are_named(known_trace: str, tmp_path: Path) -> None:
    out = subprocess.run([MESHTRACE, "traces", "--jaeger", known_trace], capture_output=True, text=True,
                         check=False, cwd=tmp_path)
    assert out.returncode == 2
    assert "--service is needed" in out.stderr
    assert all(name in out.stderr for name in ("cart", "frontend", "payment"))


def test_client_reports_unreachable_jaeger() -> None:
    port = free_port()
    with pytest.raises(JaegerError, match=f"127.0.0.1:{port}"):
        JaegerClient(f"http://127.0.0.1:{port}", timeout=2).services()


def test_graph_from_jaeger_dependencies(known_trace: str, tmp_path: Path) -> None:
    out = subprocess.run([MESHTRACE, "graph", "--jaeger", known_trace, "--lookback", "86400", "--width", "100"],
                         capture_output=True, text=True, check=False, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert "  frontend" in lines
    assert "  ├─► cart" in lines
    assert "  └─► payment" in lines
    row = next(line for line in lines if line.startswith("  frontend") and "─► cart" in line)
    assert row.split()[3:] == ["1", "-", "-", "-", "-"]        # Jaeger knows calls, not errors or latency
