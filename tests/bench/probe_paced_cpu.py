"""CPU and context switches per request at the paced ~1000 req/s of bench_proxy.py's p99 runs, for the sidecar and
for what it is compared with (a probe, not a benchmark: it prints, judges nothing).

Run: `.venv/bin/python tests/bench/probe_paced_cpu.py [--duration 5] [--rounds 2]` (needs nginx and wrk: `make
bench-deps`). An nginx upstream, then in front of it, each loaded in turn by the same paced wrk runs as bench_proxy.py
(20 connections, a random 0-40 ms between each one's requests): nginx as a reverse proxy (1 worker), a blind uvloop
forwarder (tests/bench/blind_forwarder.py: the floor of any proxy built on uvloop), and `meshtrace proxy` traced
(100%) and untraced. For each it prints wrk's p50/p99 and, per request, the proxy's user and system CPU
microseconds and its voluntary and involuntary context switches, from /proc before and after each run.

What it showed (2-vCPU nested-virtualisation machines, session 10, three rounds): system time per request alike
everywhere (33-47 µs: the same four socket calls and the wake-ups they cause); user time nginx 12-18 µs, the blind
forwarder 8-18, the untraced sidecar 60-74 and the traced one 90-107. The sidecar was preempted 1.3-1.6 times per
request, against 0.6-0.7 for nginx and the forwarder: the peer its write wakes takes the CPU while the sidecar still
has Python to run. So the sidecar's paced latency above nginx's is its Python per request, not uvloop and not the
system calls.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

# The sibling scripts' helpers (their directory is sys.path[0] when this runs as a script).
from bench_proxy import (
    PACED_LUA,
    PROXY_LOCATION,
    UPSTREAM_LOCATION,
    Bench,
    otlp_env,
    otlp_sink,
    sidecar_command,
    tree,
    wrk,
)
from probe_sidecar_threads import Stats, thread_stats

from meshtrace.demo.processes import free_port

HERE = Path(__file__).resolve().parent


def _totals(pids: list[int]) -> tuple[float, float, int, int]:
    stats: Stats = {}
    for pid in pids:
        stats.update(thread_stats(pid))
    return (sum(s[1] for s in stats.values()), sum(s[2] for s in stats.values()),
            sum(s[3] for s in stats.values()), sum(s[4] for s in stats.values()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=5, help="seconds per paced wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="paced runs of every path, one path after another")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="meshtrace-probe-") as workdir:
        bench = Bench(Path(workdir), args.duration)
        script = Path(workdir) / "paced.lua"
        script.write_text(PACED_LUA)
        sink = otlp_sink()
        try:
            upstream = bench.upstream_port
            bench.nginx("upstream", upstream, UPSTREAM_LOCATION)
            paths: dict[str, tuple[int, list[int]]] = {}
            port = free_port()
            proc = bench.nginx("proxy", port, PROXY_LOCATION)
            paths["nginx (1 worker)"] = (port, tree(proc.pid))
            port = free_port()
            proc = bench.start([sys.executable, str(HERE / "blind_forwarder.py"), str(port), str(upstream)], port)
            paths["blind uvloop forwarder"] = (port, [proc.pid])
            for name, extra in (("meshtrace, 100% traced", ["--sampling", "100"]),
                                ("meshtrace, no tracing", ["--no-tracing"])):
                port = free_port()
                proc = bench.start(sidecar_command(port, upstream, *extra), port,
                                   env=otlp_env(sink.server_address[1]))
                paths[name] = (port, [proc.pid])
            for port, _ in paths.values():
                wrk(f"http://127.0.0.1:{port}/", connections=20, duration=2)     # warm-up: pools, caches
            print(f"{'path':<24} {'p50 ms':>7} {'p99 ms':>7} {'user µs':>8} {'sys µs':>7} {'vol cs':>7} "
                  f"{'invol cs':>8}   (per request)")
            for _ in range(args.rounds):
                for name, (port, pids) in paths.items():
                    before = _totals(pids)
                    run = wrk(f"http://127.0.0.1:{port}/", connections=20, duration=args.duration, script=script)
                    after = _totals(pids)
                    requests = max(run["requests"], 1)
                    user, system, vol, invol = (a - b for a, b in zip(after, before, strict=True))
                    print(f"{name:<24} {run['p50']:>7.3f} {run['p99']:>7.3f} {user / requests * 1e6:>8.1f} "
                          f"{system / requests * 1e6:>7.1f} {vol / requests:>7.2f} {invol / requests:>8.2f}")
        finally:
            sink.shutdown()
            bench.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
