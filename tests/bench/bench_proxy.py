"""Sidecar benchmark (a script, not a test): direct vs nginx vs haproxy vs meshtrace in front of one nginx.

Run: `.venv/bin/python tests/bench/bench_proxy.py [--duration 10] [--paced-runs 3] [--rounds 3] [--realtime]`
(needs nginx, haproxy and wrk on PATH: `make bench-deps`). Everything binds 127.0.0.1 on free ports and runs from a
temporary directory; every process started here is stopped at the end. For each path it reports requests/s at saturation
(wrk, 1 thread, 50 connections), p50/p99 latency at a fixed ~1000 req/s (wrk with a Lua `delay()` pacing 20
connections at one request per 20 ms each, randomised), CPU seconds per 1000 requests of the proxy's processes (and
of their main threads alone: for the sidecar the event loop, the rest being the span exporter's thread) and their
peak RSS.

The paced p99 of one short run on a shared 2-core machine swings by more than the differences being measured, and
the machine's load drifts between one path's run and the next. So every path, direct included, gets
`--paced-runs` paced runs, each right after a paced run straight to the upstream: p50/p99 are the medians of the
path's runs, `+p99` the median of (path p99 - the direct p99 measured just before it), and each run's pair is
printed. The throughput ratios (sidecar/nginx and the others) are taken from `--rounds` more saturated runs made
after every path was measured, all paths still running, one path after another in each round: each round's ratio
compares two runs of the same round (40 s for all eight paths at --duration 5), and the median of the rounds'
ratios is reported. `--realtime` runs
every process of every path (nginx, haproxy, the sidecar, wrk) under SCHED_FIFO (`chrt
-f`), so other tenants' CPU-bound work cannot preempt any of them: what remains is the path's own cost and the
scheduling among its own processes. Both apply to every path alike.
The meshtrace sidecar runs with tracing on (100% sampled, OTLP to a local sink that accepts and discards)
and Istio metrics on, as in issue 4.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from statistics import median
from typing import Any

# Shared with the other benchmarks (this directory is sys.path[0] when the script runs).
from benchkit import OtlpSink

from meshtrace.demo.processes import free_port

MESHTRACE = Path(sys.executable).parent / "meshtrace"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# 20 connections, each waiting a random 0-40 ms (mean 20 ms) before its next request: about 1000 req/s
# overall, with arrivals spread out instead of all connections firing in lock-step bursts.
PACED_LUA = """
math.randomseed(os.time())
function delay()
  return math.random(0, 40)
end
"""

# nginx `location`s: the upstream every path is measured against, and nginx as a reverse proxy in front of it.
UPSTREAM_LOCATION = 'location / { default_type text/plain; return 200 "hello from the upstream\\n"; }'
PROXY_LOCATION = 'location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }'


def otlp_sink() -> ThreadingHTTPServer:
    """An OTLP/HTTP endpoint on a free 127.0.0.1 port that accepts and discards (counting its POSTs in
    `spans_posted`), served by a daemon thread; `shutdown()` it when done."""
    sink = ThreadingHTTPServer(("127.0.0.1", 0), OtlpSink)
    sink.spans_posted = 0  # type: ignore[attr-defined]
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    return sink


def otlp_env(sink_port: int) -> dict[str, str]:
    """The environment of a sidecar exporting its spans over OTLP to the sink on `sink_port`."""
    return {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
            "OTEL_TRACES_EXPORTER": "otlp", "MESHTRACE_EXPORTER": "otlp"}


def sidecar_command(port: int, upstream_port: int, *extra: str) -> list[str]:
    """`meshtrace proxy` listening on `port` in front of `upstream_port`, with no access log; `extra` adds flags."""
    return [str(MESHTRACE), "proxy", "--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{upstream_port}",
            "--service", "bench", "--access-log", "", *extra]


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def tree(pid: int) -> list[int]:
    """`pid` and its descendants (nginx's master + worker)."""
    pids = [pid]
    for child in Path(f"/proc/{pid}/task").glob("*/children"):
        for text in child.read_text().split():
            pids += tree(int(text))
    return pids


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])     # utime + stime
    return total / CLK_TCK


def main_thread_cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of each process's main thread only (for the sidecar: the event loop, not the span exporter)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def peak_rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        if match:
            total += int(match.group(1))
    return total / 1024


@dataclass
class Result:
    name: str
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    paced_rps: float = 0.0
    cpu_per_1000: float | None = None
    loop_cpu_per_1000: float | None = None     # the main thread's share (the rest: exporter and log threads)
    rss_mb: float | None = None
    errors: int = 0
    added_p99_ms: float = 0.0           # median over runs of (this path's p99 - direct's p99 just before it)
    round_rps: list[float] = field(default_factory=list)  # saturated req/s of each interleaved round
    p99_runs: list[float] = field(default_factory=list)
    direct_p99_runs: list[float] = field(default_factory=list)


def _ms(text: str) -> float:
    value = float(re.sub(r"[a-z]+$", "", text))
    if text.endswith("us"):
        return value / 1000
    if text.endswith("ms"):
        return value
    if text.endswith("s"):
        return value * 1000
    return value


# `--realtime`: the command prefix that runs a process (and the threads and children it makes) under SCHED_FIFO.
REALTIME = ["chrt", "-f", "50"]


def wrk(url: str, *, connections: int, duration: int, script: Path | None = None,
        headers: Sequence[str] = (), prefix: Sequence[str] = ()) -> dict[str, Any]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", url]
    for header in headers:
        command[1:1] = ["-H", header]
    if script is not None:
        command[1:1] = ["-s", str(script)]
    command[:0] = prefix
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration + 30, check=True).stdout
    result: dict[str, Any] = {"raw": out}
    result["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    result["requests"] = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    for pct in ("50", "99"):
        match = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+\w+)", out, re.M)
        result[f"p{pct}"] = _ms(match.group(1)) if match else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["errors"] = (int(errors.group(1)) if errors else 0) + (
        sum(int(x) for x in socket_errors.groups()) if socket_errors else 0)
    return result


class Bench:
    def __init__(self, workdir: Path, duration: int, *, paced_runs: int = 3, rounds: int = 3,
                 realtime: bool = False) -> None:
        self.dir = workdir
        self.duration = duration
        self.paced_runs = paced_runs
        self.rounds = rounds
        # Every measured path, left running after its own measurement for the interleaved rounds.
        self.targets: list[tuple[Result, str, Sequence[str]]] = []
        self.prefix = REALTIME if realtime else []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.upstream_port = free_port()

    def start(self, command: list[str], port: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.dir / f"{Path(command[0]).name}-{port}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([*self.prefix, *command], cwd=self.dir, env=env, stdout=subprocess.DEVNULL,
                                stderr=log)
        self.procs.append(proc)
        wait_port(port)
        return proc

    def nginx(self, name: str, port: int, location: str) -> subprocess.Popen[bytes]:
        prefix = self.dir / name
        (prefix / "logs").mkdir(parents=True, exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(f"""
daemon off; master_process on; worker_processes 1; pid {prefix}/nginx.pid; error_log {prefix}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off; keepalive_requests 1000000; keepalive_timeout 75s;
  upstream app {{ server 127.0.0.1:{self.upstream_port}; keepalive 64; }}
  server {{ listen 127.0.0.1:{port} reuseport backlog=4096; {location} }}
}}
""")
        return self.start(["nginx", "-p", str(prefix), "-c", str(conf)], port)

    def measure(self, name: str, port: int, pids: list[int] | None, headers: Sequence[str] = ()) -> Result:
        url = f"http://127.0.0.1:{port}/"
        prefix = self.prefix
        wrk(url, connections=20, duration=2, headers=headers, prefix=prefix)      # warm-up: pools, caches
        cpu0 = cpu_seconds(pids) if pids else 0.0
        main0 = main_thread_cpu_seconds(pids) if pids else 0.0
        saturated = wrk(url, connections=50, duration=self.duration, headers=headers, prefix=prefix)
        cpu1 = cpu_seconds(pids) if pids else 0.0
        main1 = main_thread_cpu_seconds(pids) if pids else 0.0
        script = self.dir / "paced.lua"
        script.write_text(PACED_LUA)
        direct_url = f"http://127.0.0.1:{self.upstream_port}/"
        runs = []
        for _ in range(self.paced_runs):
            # Direct right before each run of the path: `+p99` compares runs made under the same machine load.
            direct = wrk(direct_url, connections=20, duration=self.duration, script=script, prefix=prefix)
            paced = wrk(url, connections=20, duration=self.duration, script=script, headers=headers, prefix=prefix)
            runs.append((direct, paced))
        result = Result(name, rps=saturated["rps"], p50_ms=median(p["p50"] for _, p in runs),
                        p99_ms=median(p["p99"] for _, p in runs), paced_rps=median(p["rps"] for _, p in runs),
                        errors=saturated["errors"] + sum(p["errors"] for _, p in runs),
                        added_p99_ms=median(p["p99"] - d["p99"] for d, p in runs),
                        p99_runs=[p["p99"] for _, p in runs], direct_p99_runs=[d["p99"] for d, _ in runs])
        self.targets.append((result, url, headers))
        if pids:
            result.cpu_per_1000 = (cpu1 - cpu0) / saturated["requests"] * 1000
            result.loop_cpu_per_1000 = (main1 - main0) / saturated["requests"] * 1000
            result.rss_mb = peak_rss_mb(pids)
        return result

    def run(self) -> list[Result]:
        results = []
        self.nginx("upstream", self.upstream_port, UPSTREAM_LOCATION)
        results.append(self.measure("direct", self.upstream_port, None))

        port = free_port()
        proc = self.nginx("proxy", port, PROXY_LOCATION)
        results.append(self.measure("nginx (1 worker)", port, tree(proc.pid)))

        port = free_port()
        cfg = self.dir / "haproxy.cfg"
        cfg.write_text(f"""
global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:{port}
  default_backend be
backend be
  server app 127.0.0.1:{self.upstream_port}
""")
        proc = self.start(["haproxy", "-f", str(cfg)], port)
        results.append(self.measure("haproxy (1 thread)", port, tree(proc.pid)))

        sink = otlp_sink()
        # The configuration first (tracing at 100% + metrics); then Istio's default 1% sampling and
        # tracing off, to show where the time goes.
        variants = [("meshtrace sidecar", ["--sampling", "100"]), ("meshtrace, 1% sampled", ["--sampling", "1"]),
                    ("meshtrace, no tracing", ["--no-tracing"])]
        try:
            for name, extra in variants:
                port, admin = free_port(), free_port()
                proc = self.start(sidecar_command(port, self.upstream_port, "--admin", f"127.0.0.1:{admin}", *extra),
                                  port, env=otlp_env(sink.server_address[1]))
                results.append(self.measure(name, port, [proc.pid]))
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics") as response:
                    metrics = response.read().decode()
                total = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                            if line.startswith("istio_requests_total{"))
                posted = sink.spans_posted  # type: ignore[attr-defined]
                print(f"{name}: istio_requests_total={total:.0f}, OTLP export POSTs so far={posted}")
            results.extend(self.routed(sink.server_address[1]))
            self.interleave()
        finally:
            sink.shutdown()
        return results

    def routed(self, sink_port: int) -> list[Result]:
        """The outbound listener, plain and with 50 header-matched Istio routes (the last one matching)."""
        rules = self.dir / "rules.yaml"
        rules.write_text(routes_yaml(ROUTES, self.upstream_port))
        results = []
        for name, extra, headers in [
            ("outbound, no rules", [], [f"Host: 127.0.0.1:{self.upstream_port}"]),
            (f"outbound, {ROUTES} routes", ["--rules", str(rules)], ["Host: bench:80", f"x-route: r{ROUTES - 1}"]),
        ]:
            port = free_port()
            proc = self.start(sidecar_command(free_port(), self.upstream_port, "--outbound", f"127.0.0.1:{port}",
                                              "--sampling", "100", *extra), port, env=otlp_env(sink_port))
            results.append(self.measure(name, port, [proc.pid], headers))
        return results

    def interleave(self) -> None:
        """`rounds` more saturated runs of every path, one path after another in each round: the host's load
        drifts over the minutes between one path's measurement and the next, and a ratio of two runs made side by
        side in one round is not skewed by that drift as a ratio of two runs minutes apart is."""
        for _ in range(self.rounds):
            for result, url, headers in self.targets:
                run = wrk(url, connections=50, duration=self.duration, headers=headers, prefix=self.prefix)
                result.round_rps.append(run["rps"])
                result.errors += run["errors"]

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


ROUTES = 50


def routes_yaml(count: int, upstream_port: int) -> str:
    """A ServiceEntry for `bench` on the upstream and a VirtualService of `count` header-matched routes."""
    api = "apiVersion: networking.istio.io/v1\n"
    entry = (f"{api}kind: ServiceEntry\nmetadata: {{name: bench}}\nspec:\n  hosts: [bench]\n"
             f"  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n"
             f"  endpoints:\n  - {{address: 127.0.0.1, ports: {{http: {upstream_port}}}}}\n")
    rules = "".join(f"  - match: [{{headers: {{x-route: {{exact: r{i}}}}}}}]\n"
                    f"    route: [{{destination: {{host: bench}}}}]\n" for i in range(count))
    service = f"{api}kind: VirtualService\nmetadata: {{name: bench}}\nspec:\n  hosts: [bench]\n  http:\n{rules}"
    return entry + "---\n" + service


def report(results: list[Result]) -> str:
    nginx = next(r for r in results if r.name.startswith("nginx"))
    lines = [f"{'path':<24} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'+p99 ms':>8} {'paced/s':>8} "
             f"{'CPU-s/1k':>9} {'(main)':>7} {'RSS MB':>7} {'errors':>6}"]
    for r in results:
        cpu = f"{r.cpu_per_1000:.4f}" if r.cpu_per_1000 is not None else "-"
        main = f"{r.loop_cpu_per_1000:.4f}" if r.loop_cpu_per_1000 is not None else "-"
        rss = f"{r.rss_mb:.1f}" if r.rss_mb is not None else "-"
        lines.append(f"{r.name:<24} {r.rps:>9.0f} {r.p50_ms:>7.3f} {r.p99_ms:>7.3f} {r.added_p99_ms:>8.3f} "
                     f"{r.paced_rps:>8.0f} {cpu:>9} {main:>7} {rss:>7} {r.errors:>6}")
    lines.append("p99 ms of each paced run, path/direct just before it:")
    for r in results:
        pairs = "  ".join(f"{p:.3f}/{d:.3f}" for p, d in zip(r.p99_runs, r.direct_p99_runs, strict=True))
        lines.append(f"  {r.name:<22} {pairs}")
    if any(r.round_rps for r in results):
        lines.append("saturated req/s in each interleaved round (every path in turn, then the next round):")
        for r in results:
            lines.append(f"  {r.name:<22} " + "  ".join(f"{rps:.0f}" for rps in r.round_rps))
    for mesh in results[3:6]:
        lines.append(f"{mesh.name}/nginx throughput ratio: {ratio(mesh, nginx)} (goal >= 0.33)")
    plain, routed = results[6:8]
    lines.append(f"{routed.name}/{plain.name} throughput ratio: {ratio(routed, plain)} (goal >= 0.90)")
    lines.append(f"haproxy/nginx throughput ratio: {ratio(results[2], nginx)}")
    return "\n".join(lines)


def ratio(path: Result, reference: Result) -> str:
    """`path`'s throughput over `reference`'s: the median of the interleaved rounds' ratios when there were
    rounds (each round's pair ran side by side), with the first measurement's ratio after it."""
    single = path.rps / reference.rps
    if not path.round_rps or len(path.round_rps) != len(reference.round_rps):
        return f"{single:.2f}"
    rounds = [a / b for a, b in zip(path.round_rps, reference.round_rps, strict=True)]
    return (f"{median(rounds):.2f} (median of rounds: {' '.join(f'{x:.2f}' for x in rounds)}; "
            f"first measurement: {single:.2f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--paced-runs", type=int, default=3,
                        help="paced runs per path, each after a direct one; medians are reported")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved saturated rounds (every path in turn) the throughput ratios are taken from")
    parser.add_argument("--realtime", action="store_true",
                        help="run every path's processes and wrk under SCHED_FIFO (chrt -f 50; needs root)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()
    for tool in ("nginx", "haproxy", "wrk"):
        if shutil.which(tool) is None:
            print(f"bench_proxy: {tool} not found (make bench-deps)", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="meshtrace-bench-") as workdir:
        bench = Bench(Path(workdir), args.duration, paced_runs=args.paced_runs, rounds=args.rounds,
                      realtime=args.realtime)
        try:
            results = bench.run()
        finally:
            bench.close()
    print(report(results))
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
