"""Where a sidecar request's latency goes at a paced 1000 req/s (a probe, not a benchmark: it prints, judges nothing).

Run: `.venv/bin/python tests/bench/probe_latency_parts.py [--duration 5] [--runs 2] [--mode 100|1|off]` (needs nginx
and wrk: `make bench-deps`). It starts an nginx upstream, nginx as a reverse proxy, and the sidecar with
`latency_hooks` loaded (through a generated sitecustomize), then makes the same paced wrk runs as bench_proxy.py
against each, every run right after one straight to the upstream. It prints wrk's p50/p99 per path and, from inside
the sidecar, per request: the callback that parses the request and writes it upstream, that write alone, the wait
for the upstream's answer, the callback that writes the response back, that write alone, the whole time in the
sidecar, and the hop's report (run after the responses, proxy.reports). Then, for every request and for the slowest
1% by time in the sidecar: the wait for the upstream's answer, and how much of it the loop spent in other requests'
callbacks and reports. What it showed on the 2-vCPU nested-virtualisation machines this project runs on: each write
that wakes a sleeping peer costs 25-40 µs at p50 (nginx pays the same); the Python around them runs 2-3 times
slower per request at 1000 req/s than at saturation (cold caches after every idle wait); and the requests arrive in
bunches (wrk fires its delayed requests on a millisecond timer), so two thirds of the waits hold other requests'
callbacks, and in the slowest 1% those callbacks are most of the wait. That queueing is where most of the gap to
nginx's p99 comes from: it grows with the loop's time per request.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

from bench_proxy import PACED_LUA, PROXY_LOCATION, UPSTREAM_LOCATION, Bench, otlp_env, otlp_sink, sidecar_command, wrk

from meshtrace.demo.processes import free_port

HERE = Path(__file__).resolve().parent
PARTS = ("request callback", "write upstream", "upstream round trip", "response callback", "write downstream",
         "in sidecar", "report")
# Every request, alone in flight or not: the wait for the upstream's answer, and how much of it the loop spent in
# other requests' callbacks and reports (at 1000 req/s requests arrive in bunches, so that is the tail).
WAITS = ("wait for upstream, all", "others' callbacks in it", "slowest 1%: wait", "slowest 1%: others' callbacks")


def paced(bench: Bench, name: str, port: int, runs: int, script: Path) -> None:
    direct_url, url = f"http://127.0.0.1:{bench.upstream_port}/", f"http://127.0.0.1:{port}/"
    for _ in range(runs):
        direct = wrk(direct_url, connections=20, duration=bench.duration, script=script)
        path = wrk(url, connections=20, duration=bench.duration, script=script)
        print(f"{name:<22} p50 {path['p50']:.3f} ms  p99 {path['p99']:.3f} ms   direct just before: "
              f"p50 {direct['p50']:.3f}  p99 {direct['p99']:.3f}   added p99 {path['p99'] - direct['p99']:+.3f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per paced wrk run")
    parser.add_argument("--runs", type=int, default=2, help="paced runs per path")
    parser.add_argument("--mode", choices=("100", "1", "off"), default="100",
                        help="sidecar sampling percentage, or off for --no-tracing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        hooks = workdir / "hooks"
        hooks.mkdir()
        (hooks / "sitecustomize.py").write_text("import latency_hooks\nlatency_hooks.install()\n")
        script = workdir / "paced.lua"
        script.write_text(PACED_LUA)
        bench = Bench(workdir, args.duration)
        sink = otlp_sink()
        try:
            bench.nginx("upstream", bench.upstream_port, UPSTREAM_LOCATION)
            port = free_port()
            bench.nginx("proxy", port, PROXY_LOCATION)
            paced(bench, "nginx (1 worker)", port, args.runs, script)

            port, admin, out = free_port(), free_port(), workdir / "parts.json"
            env = {**otlp_env(sink.server_address[1]), "PYTHONPATH": f"{hooks}{os.pathsep}{HERE}",
                   "MESHTRACE_LATENCY_HOOKS_OUT": str(out)}
            tracing = ["--no-tracing"] if args.mode == "off" else ["--sampling", args.mode]
            sidecar = bench.start(sidecar_command(port, bench.upstream_port, "--admin", f"127.0.0.1:{admin}",
                                                  *tracing), port, env=env)
            paced(bench, f"meshtrace ({args.mode})", port, args.runs, script)
            sidecar.send_signal(signal.SIGTERM)
            sidecar.wait(30)
        finally:
            sink.shutdown()
            bench.close()
        if not out.exists():
            print("the sidecar wrote no timings (did latency_hooks load?)", file=sys.stderr)
            return 1
        parts = json.loads(out.read_text())
    print("\ninside the sidecar, µs per request (one request in flight):")
    print(f"{'':<22} {'n':>7} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>8}")
    _print_rows(parts, PARTS, 22)
    print("\nevery request (the slowest 1% by time in the sidecar), µs:")
    _print_rows(parts, WAITS, 30)
    return 0


def _print_rows(parts: dict[str, dict[str, float]], names: tuple[str, ...], width: int) -> None:
    for name in names:
        row = parts[name]
        if row.get("n"):
            print(f"{name:<{width}} {row['n']:>7} {row['p50']:>7} {row['p90']:>7} {row['p99']:>7} {row['max']:>8}")


if __name__ == "__main__":
    sys.exit(main())
