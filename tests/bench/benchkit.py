"""What several benchmark scripts share: callgrind's instruction count for a command, and an OTLP/HTTP sink.

Not a benchmark (run_all.py runs `bench_*.py`): the scripts import it from their own directory, which is first on
`sys.path` when one runs as `python tests/bench/bench_x.py`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler
from typing import Any

__all__ = ["OtlpSink", "instructions"]


def instructions(script: str, args: Sequence[str]) -> int:
    """Instructions callgrind counts for `python script args...` (hash seed pinned: dict layouts, and so the
    count, stay the same from run to run)."""
    command = ["valgrind", "--tool=callgrind", "--dump-instr=no", "--callgrind-out-file=/dev/null", sys.executable,
               script, *args]
    out = subprocess.run(command, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "0"}).stderr
    match = re.search(r"Collected : (\d+)", out)
    if match is None:
        raise SystemExit(f"no callgrind total in:\n{out[-2000:]}")
    return int(match.group(1))


class OtlpSink(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that accepts every export and discards it, counting the POSTs in its server's
    `spans_posted`."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        server: Any = self.server
        server.spans_posted = getattr(server, "spans_posted", 0) + 1
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass
