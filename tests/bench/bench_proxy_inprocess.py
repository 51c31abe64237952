"""The sidecar's own cost per request, measured in-process: CPU time, or exact instruction counts under callgrind.

Run: `.venv/bin/python tests/bench/bench_proxy_inprocess.py [--requests 5000] [--callgrind]`. The real `Sidecar`
(inbound listener, Istio metrics, no access log) runs on uvloop in this process; a helper process (this script
with `--peer`) is both a tiny keep-alive upstream and a client sending one request at a time over one keep-alive
connection, so the sidecar's event loop does exactly one request's work per round trip on loopback sockets. It
prints the sidecar's CPU microseconds per request without tracing and with tracing (100% sampled, spans dropped
by a no-op exporter), and their ratio; user and system time of the whole process, the best of 3 runs each.
`--export otlp` exports the traced run's spans as the sidecar does (OTLP over HTTP to a sink in the helper
process that accepts and discards): the hop spans then take the encoded lane, and the span exporter thread's
work (batching, encoding, the POSTs) is counted with the event loop's.
`--callgrind` runs the same under `valgrind --tool=callgrind` (500 and 2500 requests) and prints the difference per
request in instructions: deterministic to a few percent on a busy machine where wall-clock numbers are not (the
helper process is not counted).
`--access-log` adds the access log (Envoy format, written to /dev/null by its own thread, which is counted), as
`meshtrace proxy` runs by default; without it the sidecar runs with the access log off.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from http.server import ThreadingHTTPServer

# Shared with the other benchmarks (this directory is sys.path[0] when the script runs).
from benchkit import OtlpSink, instructions

RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 08:00:00 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 24\r\nConnection: keep-alive\r\n\r\n"
            b"hello from the upstream\n")


# -- the helper process: upstream and client -------------------------------------------------------------------------
def _serve(conn: socket.socket) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = b""
    while True:
        data = conn.recv(65536)
        if not data:
            return
        buffer += data
        while b"\r\n\r\n" in buffer:
            _, buffer = buffer.split(b"\r\n\r\n", 1)
            conn.sendall(RESPONSE)


def _accept(listener: socket.socket) -> None:
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_serve, args=(conn,), daemon=True).start()


def peer() -> int:
    """Print the upstream's and the OTLP sink's ports; read `proxy_port count`; send `count` requests in turn;
    print `done`."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    threading.Thread(target=_accept, args=(listener,), daemon=True).start()
    sink = ThreadingHTTPServer(("127.0.0.1", 0), OtlpSink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    print(listener.getsockname()[1], sink.server_address[1], flush=True)
    port, count = map(int, sys.stdin.readline().split())
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            client.sendall(request)
            got = b""
            while not got.endswith(b"upstream\n"):
                data = client.recv(65536)
                if not data:
                    print("closed", flush=True)
                    return 1
                got += data
    print("done", flush=True)
    return 0


# -- the sidecar process -----------------------------------------------------------------------------------------------
async def _run_sidecar(count: int, traced: bool, export: str, access_log: bool) -> float:
    from meshtrace.proxy.accesslog import AccessLog
    from meshtrace.proxy.config import load_config
    from meshtrace.proxy.metrics import IstioMetrics
    from meshtrace.proxy.server import Sidecar, _tracing

    helper = subprocess.Popen([sys.executable, __file__, "--peer"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    assert helper.stdin is not None
    assert helper.stdout is not None
    stdout = helper.stdout
    upstream_port, sink_port = map(int, stdout.readline().split())
    upstream = f"127.0.0.1:{upstream_port}"
    settings = {"listen": "127.0.0.1:0", "upstream": upstream, "access_log": "", "tracing": traced,
                "service": "bench"}
    if export == "otlp":
        os.environ.update({"MESHTRACE_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}"})
    else:
        os.environ["MESHTRACE_EXPORTER"] = "none"   # spans are made and ended, then dropped
    tracer, propagator = _tracing(load_config(settings))
    metrics = IstioMetrics()
    log = AccessLog(open(os.devnull, "w", encoding="utf-8")) if access_log else None  # noqa: SIM115 (closed below)
    sidecar = Sidecar(load_config(settings), tracer=tracer, propagator=propagator,
                      observers=[metrics] if log is None else [metrics, log], metrics=metrics)
    await sidecar.start()
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)                # as `meshtrace proxy` runs
    started = time.process_time()
    helper.stdin.write(f"{sidecar.port('inbound')} {count}\n")
    helper.stdin.flush()
    line = await asyncio.get_running_loop().run_in_executor(None, stdout.readline)
    cpu = time.process_time() - started
    while sidecar.active_connections:
        await asyncio.sleep(0.01)
    await sidecar.close()
    if log is not None:
        log.close()
        if log.written != count:
            raise SystemExit(f"the access log wrote {log.written} lines for {count} requests")
    helper.wait()
    if line.strip() != "done" or f"{count}" not in metrics.render():
        raise SystemExit(f"the run did not complete: {line.strip()!r}")
    return cpu


def sidecar(count: int, traced: bool, export: str, access_log: bool) -> float:
    import uvloop

    return uvloop.run(_run_sidecar(count, traced, export, access_log))


def _child_args(count: int, traced: bool, export: str, access_log: bool) -> list[str]:
    return ["--sidecar", str(count), "--export", export, *(["--traced"] if traced else []),
            *(["--access-log"] if access_log else [])]


def _cpu_seconds(count: int, traced: bool, export: str, access_log: bool) -> float:
    """One run in a fresh process (tracing is configured once per process), its CPU seconds."""
    command = [sys.executable, __file__, *_child_args(count, traced, export, access_log)]
    return float(subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()[-1])


def _instructions(count: int, traced: bool, export: str, access_log: bool) -> int:
    return instructions(__file__, _child_args(count, traced, export, access_log))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=5000, help="requests per timed run")
    parser.add_argument("--callgrind", action="store_true", help="instructions per request (needs valgrind)")
    parser.add_argument("--export", choices=("none", "otlp"), default="none",
                        help="none: traced spans are dropped; otlp: exported to a sink, as the sidecar does")
    parser.add_argument("--access-log", action="store_true",
                        help="with the access log on (written to /dev/null); off by default")
    parser.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sidecar", type=int, metavar="N", help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peer:
        return peer()
    if args.sidecar is not None:
        print(sidecar(args.sidecar, args.traced, args.export, args.access_log), flush=True)
        # Spans still queued are not flushed at exit: the sink has gone with the helper process.
        os._exit(0)
    results: dict[bool, float] = {}
    if args.callgrind:
        if shutil.which("valgrind") is None:
            raise SystemExit("valgrind is not installed")
        for traced in (False, True):
            small = _instructions(500, traced, args.export, args.access_log)
            large = _instructions(2500, traced, args.export, args.access_log)
            results[traced] = (large - small) / 2000
        unit = "instructions per request"
    else:
        for traced in (False, True):
            # The clock starts once the sidecar listens: start-up is not counted; the best of 3 runs is the one
            # least disturbed by whatever else the machine is doing.
            results[traced] = min(_cpu_seconds(args.requests, traced, args.export, args.access_log)
                                  for _ in range(3)) / args.requests * 1e6
        unit = "CPU us per request"
    log = ", access log on" if args.access_log else ""
    print(f"sidecar in-process, no tracing{log}: {results[False]:,.1f} {unit}")
    print(f"sidecar in-process, 100% traced (export: {args.export}){log}: {results[True]:,.1f} {unit}")
    print(f"traced/untraced ratio: {results[True] / results[False]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
