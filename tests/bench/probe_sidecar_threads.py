"""Where the traced sidecar's time goes at saturation, thread by thread: CPU, context switches and syscalls.

Run: `.venv/bin/python tests/bench/probe_sidecar_threads.py [--duration 5] [--strace]` (needs nginx and wrk;
`--strace` needs strace). As tests/bench/bench_proxy.py does, an nginx upstream, an OTLP sink that accepts and
discards, and `meshtrace proxy` in front (100% traced, then untraced), loaded by wrk (1 thread, 50 connections).
For each sidecar thread (the event loop, the span exporter, others) it prints CPU microseconds (user, system),
voluntary and involuntary context switches, per request, read from /proc before and after the wrk run. With
`--strace`, a second run under `strace -f -c` counts the sidecar's system calls per request by kind (strace slows
the process several times over: its counts per request are what to read, not its throughput).
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The sibling script's helpers (its directory is sys.path[0] when this runs as a script).
from bench_proxy import CLK_TCK, UPSTREAM_LOCATION, Bench, otlp_env, otlp_sink, sidecar_command, wrk

from meshtrace.demo.processes import free_port

Stats = dict[int, tuple[str, float, float, int, int]]


def thread_stats(pid: int) -> Stats:
    """tid -> (name, user s, system s, voluntary switches, involuntary switches)."""
    stats: Stats = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            status = (task / "status").read_text()
        except OSError:
            continue
        name = re.search(r"Name:\s+(.*)", status)
        voluntary = re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M)
        involuntary = re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", status, re.M)
        stats[int(task.name)] = (name.group(1) if name else "?", int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK,
                                 int(voluntary.group(1)) if voluntary else 0,
                                 int(involuntary.group(1)) if involuntary else 0)
    return stats


def report(title: str, pid: int, before: Stats, after: Stats, *, requests: int, rps: float) -> None:
    print(f"{title}: {rps:,.0f} req/s, {requests} requests")
    print(f"  {'thread':<24} {'user us/req':>11} {'sys us/req':>10} {'vol cs/1k':>10} {'invol cs/1k':>11}")
    for tid, (name, user, system, vol, invol) in sorted(after.items()):
        b = before.get(tid, (name, 0.0, 0.0, 0, 0))
        label = f"{name}{' (loop)' if tid == pid else ''}"
        print(f"  {label:<24} {(user - b[1]) / requests * 1e6:>11.2f} {(system - b[2]) / requests * 1e6:>10.2f} "
              f"{(vol - b[3]) / requests * 1e3:>10.2f} {(invol - b[4]) / requests * 1e3:>11.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--strace", action="store_true", help="also count system calls per request")
    parser.add_argument("--variants", default="traced,untraced")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="meshtrace-probe-") as workdir:
        bench = Bench(Path(workdir), args.duration)
        sink = otlp_sink()
        try:
            bench.nginx("upstream", bench.upstream_port, UPSTREAM_LOCATION)
            env = otlp_env(sink.server_address[1])
            for variant in args.variants.split(","):
                extra = ["--sampling", "100"] if variant == "traced" else ["--no-tracing"]
                port = free_port()
                proc = bench.start(sidecar_command(port, bench.upstream_port, *extra), port, env=env)
                url = f"http://127.0.0.1:{port}/"
                wrk(url, connections=20, duration=2)
                posted = sink.spans_posted  # type: ignore[attr-defined]
                before = thread_stats(proc.pid)
                result = wrk(url, connections=50, duration=args.duration)
                after = thread_stats(proc.pid)
                report(variant, proc.pid, before, after, requests=result["requests"], rps=result["rps"])
                print(f"  OTLP POSTs per 1k requests: "
                      f"{(sink.spans_posted - posted) / result['requests'] * 1e3:.2f}")  # type: ignore[attr-defined]
                if args.strace:
                    out = Path(workdir) / f"strace-{variant}.txt"
                    tracer = subprocess.Popen(["strace", "-f", "-c", "-o", str(out), "-p", str(proc.pid)],
                                              stderr=subprocess.DEVNULL)
                    time.sleep(1)
                    traced = wrk(url, connections=50, duration=args.duration)
                    tracer.send_signal(signal.SIGINT)
                    tracer.wait(30)
                    print(f"  under strace: {traced['requests']} requests; system calls per request:")
                    for line in out.read_text().splitlines():
                        parts = line.split()
                        if len(parts) >= 5 and parts[3].isdigit() and parts[-1] != "total":
                            print(f"    {parts[-1]:<16} {int(parts[3]) / traced['requests']:.3f}")
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
        finally:
            sink.shutdown()
            bench.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
