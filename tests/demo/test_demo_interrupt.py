"""Ctrl-C (SIGINT) or SIGTERM in the middle of the traffic, or after `--keep`: the demo stops every process it
started, promptly."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from demo_support import MESHTRACE, demo_env, survivors


@pytest.mark.parametrize(("sig", "code", "args", "marker"), [
    (signal.SIGINT, 130, ["--duration", "120"], "sending traffic"),
    (signal.SIGTERM, 128 + signal.SIGTERM, ["--duration", "120"], "sending traffic"),
    (signal.SIGINT, 130, ["--short", "--keep"], "keeps running"),
    (signal.SIGINT, 130, ["--short"], "starting 6 services"),
], ids=["sigint-under-load", "sigterm-under-load", "sigint-after-keep", "sigint-while-starting"])
def test_a_signal_stops_everything(tmp_path: Path, sig: signal.Signals, code: int, args: list[str],
                                   marker: str) -> None:
    summary = tmp_path / "summary.json"
    demo = subprocess.Popen(
        [MESHTRACE, "demo", "--no-jaeger", *args, "--workdir", str(tmp_path / "work"), "--summary", str(summary)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=demo_env())
    try:
        assert demo.stdout is not None
        seen = []
        for line in demo.stdout:
            seen.append(line)
            if marker in line:
                break
        else:
            pytest.fail(f"the demo ended before printing {marker!r}:\n" + "".join(seen))
        time.sleep(0.5)
        sent = time.monotonic()
        demo.send_signal(sig)
        demo.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == code
    assert took < 15, f"stopping took {took:.1f}s"
    result = json.loads(summary.read_text())
    assert result["pids"], "the demo had started nothing yet"
    assert len(result["pids"]) <= 12
    assert survivors(result) == []
