"""Pre-fork: a Flask app under gunicorn with 2 workers, started by `meshtrace-run`, exports from every worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from meshtrace.demo.processes import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "e2e"
RUN = Path(sys.executable).parent / "meshtrace-run"
GUNICORN = Path(sys.executable).parent / "gunicorn"


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    spans = tmp_path / "spans.jsonl"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "MESHTRACE_"))}
    env.update({"MESHTRACE_EXPORTER": "file", "MESHTRACE_FILE": str(spans), "OTEL_BSP_SCHEDULE_DELAY": "100",
                "PYTHONPATH": ""})
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(RUN), "--service-name", "prefork", str(GUNICORN), "--workers", "2", "--bind", f"127.0.0.1:{port}",
             "backend:app"],
            cwd=EXAMPLES, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/items/1", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(log.read_text()[-3000:]) from None
                time.sleep(0.2)
        yield url, spans
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def exported_trace_ids(path: Path) -> set[str]:
    if not path.exists():
        return set()
    found: set[str] = set()
    for line in path.read_text().splitlines():
        for resource in json.loads(line)["resourceSpans"]:
            for scope in resource["scopeSpans"]:
                found.update(span["traceId"] for span in scope["spans"])
    return found


def test_every_worker_exports(gunicorn: tuple[str, Path]) -> None:
    url, spans = gunicorn

    def call(index: int) -> tuple[int, str]:
        trace_id = f"{index + 1:032x}"
        request = urllib.request.Request(f"{url}/pid", headers={"traceparent": f"00-{trace_id}-{'1' * 16}-01"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)["pid"], trace_id

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, range(8)))
    by_pid: dict[int, set[str]] = {}
    for pid, trace_id in answers:
        by_pid.setdefault(pid, set()).add(trace_id)
    assert len(by_pid) >= 2, f"all requests hit one worker: {by_pid}"
    wanted = {trace_id for _, trace_id in answers}
    deadline = time.monotonic() + 15
    while not wanted <= exported_trace_ids(spans) and time.monotonic() < deadline:
        time.sleep(0.2)
    missing = wanted - exported_trace_ids(spans)
    assert not missing, {pid: ids & missing for pid, ids in by_pid.items()}
