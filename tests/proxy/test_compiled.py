"""The request path ships compiled (mypyc), and the same source still works interpreted.

An install made with MESHTRACE_PURE_PYTHON=1 (no C compiler, or debugging) runs meshtrace/compiled.py's modules
from their .py files: here a child process is made to import them so, then serves real requests.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from proxy_harness import UpstreamServer

from meshtrace import compiled
from meshtrace.demo.processes import free_port

# Imports each of compiled.MODULES from its .py file, as an install without compilation would, then runs the CLI.
CHILD = """
import ast, importlib.util, os, sys

# MODULES read without importing meshtrace: its __init__ already imports some of them.
package = os.path.dirname(importlib.util.find_spec("meshtrace").origin)
tree = ast.parse(open(os.path.join(package, "compiled.py")).read())
MODULES = next(ast.literal_eval(node.value) for node in tree.body
               if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "MODULES")

class SourceFirst:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name not in MODULES or not path:
            return None
        for entry in path:
            source = os.path.join(entry, name.rpartition(".")[2] + ".py")
            if os.path.exists(source):
                return importlib.util.spec_from_file_location(name, source)
        return None

sys.meta_path.insert(0, SourceFirst)
from meshtrace.cli import main
sys.exit(main())
"""


def test_every_request_path_module_is_compiled_in_this_install() -> None:
    if os.environ.get("MESHTRACE_PURE_PYTHON") == "1":
        pytest.skip("this environment asks for an interpreted install (MESHTRACE_PURE_PYTHON=1)")
    assert compiled.interpreted() == []


@pytest.fixture
def interpreted_proxy(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, int, UpstreamServer]]:
    upstream = UpstreamServer()
    listen, admin = free_port(), free_port()
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "MESHTRACE_EXPORTER": "none", "OTEL_TRACES_EXPORTER": "none"}
    proc = subprocess.Popen(
        [sys.executable, str(script), "proxy", "--listen", f"127.0.0.1:{listen}", "--upstream",
         f"127.0.0.1:{upstream.port}", "--admin", f"127.0.0.1:{admin}", "--service", "reviews", "--access-log", ""],
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        yield proc, listen, admin, upstream
    finally:
        proc.kill()
        proc.wait(10)
        upstream.close()


def _get(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_the_request_path_serves_interpreted(
        interpreted_proxy: tuple[subprocess.Popen[str], int, int, UpstreamServer]) -> None:
    proc, listen, admin, _ = interpreted_proxy
    assert proc.stderr is not None
    # The start-up lines: where it serves, then the note that says the request path runs interpreted.
    lines = [proc.stderr.readline() for _ in range(2)]
    assert "serving inbound" in lines[0], lines
    assert f"{len(compiled.MODULES)} of {len(compiled.MODULES)} request-path modules run interpreted" in lines[1]
    deadline = time.monotonic() + 15
    while _get(admin, "GET", "/ready")[0] != 200:
        assert time.monotonic() < deadline, "never ready"
        time.sleep(0.05)
    body = os.urandom(300_000)
    status, answer = _get(listen, "POST", "/sha", body)
    assert status == 200
    assert json.loads(answer)["sha256"] == hashlib.sha256(body).hexdigest()
    assert _get(listen, "GET", "/status/503")[0] == 503
    metrics = _get(admin, "GET", "/metrics")[1].decode()
    counted = [line for line in metrics.splitlines() if line.startswith("istio_requests_total{")]
    assert sorted(line.split('response_code="')[1][:3] for line in counted) == ["200", "503"]
