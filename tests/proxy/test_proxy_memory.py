"""A 1 GB body each way through the real proxy process leaves its memory flat (backpressure, no buffering)."""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import subprocess
from pathlib import Path

from proxy_harness import digest, generated

GB = 1024 * 1024 * 1024


def _peak_rss_mb(pid: int) -> float:
    match = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    assert match is not None
    return int(match.group(1)) / 1024


def test_one_gigabyte_each_way_with_flat_memory(proxy_process: tuple[subprocess.Popen[bytes], int, int]) -> None:
    proc, listen, _ = proxy_process
    before = _peak_rss_mb(proc.pid)
    conn = http.client.HTTPConnection("127.0.0.1", listen, timeout=60)
    conn.request("POST", "/sha", body=generated(GB, seed=3), encode_chunked=True)
    seen = json.loads(conn.getresponse().read())
    assert seen["length"] == GB
    assert seen["sha256"] == digest(GB, seed=3)
    conn.request("GET", f"/download?size={GB}&seed=4")
    response = conn.getresponse()
    h = hashlib.sha256()
    total = 0
    while block := response.read(1 << 20):
        h.update(block)
        total += len(block)
    assert total == GB
    assert h.hexdigest() == digest(GB, seed=4)
    conn.close()
    grown = _peak_rss_mb(proc.pid) - before
    assert grown < 20, f"peak RSS grew by {grown:.1f} MB while 2 GB streamed through"
