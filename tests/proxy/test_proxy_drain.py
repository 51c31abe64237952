"""SIGTERM drains the real `meshtrace proxy` process: in-flight requests finish, then it exits 0."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET /sha HTTP/1.1\r\nHost: a\r\n\r\n")
            return bool(sock.recv(100))
    except OSError:
        return False


def _slow_request(port: int, i: int) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", f"/slow?ms=800&i={i}", body=b"x" * i)
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    return response.status, body["path"]


def test_sigterm_finishes_in_flight_requests_then_exits_0(
        proxy_process: tuple[subprocess.Popen[bytes], int, int]) -> None:
    proc, listen, _ = proxy_process
    # An idle keep-alive connection must be closed by the drain, not keep the process alive.
    idle = http.client.HTTPConnection("127.0.0.1", listen, timeout=5)
    idle.request("GET", "/sha")
    idle.getresponse().read()
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(_slow_request, listen, i) for i in range(8)]
        time.sleep(0.3)                                   # all eight are now waiting on the app
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        assert not _answers(listen)                       # no longer accepting
        results = [future.result(timeout=10) for future in futures]
    assert results == [(200, f"/slow?ms=800&i={i}") for i in range(8)]
    assert proc.wait(10) == 0
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert "draining" in stderr
    assert "Traceback" not in stderr
