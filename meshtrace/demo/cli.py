"""`meshtrace demo`: start the Bookinfo mesh, send it traffic, and show its traces, graph and per-edge numbers."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from types import FrameType
from typing import TextIO

from meshtrace.demo.load import LoadResult, ProgressBar, run_load
from meshtrace.demo.mesh import (
    RATINGS_FAULT_PERCENT,
    REVIEWS_SPLIT,
    Jaeger,
    Mesh,
    find_examples,
    find_jaeger_binary,
    proxy_supports_rules,
    start_jaeger,
    start_mesh,
)
from meshtrace.demo.processes import Supervisor
from meshtrace.errors import MeshtraceError
from meshtrace.views.cli import fetch_metrics
from meshtrace.views.graph import Edge, edges_from_samples, render_graph_text
from meshtrace.views.graph_png import render_png
from meshtrace.views.graph_svg import render_svg
from meshtrace.views.jaeger_client import JaegerClient
from meshtrace.views.model import Trace, traces_from_jaeger, traces_from_otlp_lines
from meshtrace.views.style import Style, terminal_width
from meshtrace.views.waterfall import render_waterfall

__all__ = ["pick_traces", "register", "write_pictures"]

ROOT_SERVICE = "productpage-sidecar"      # the productpage sidecar's inbound span starts every trace


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def pick_traces(traces: list[Trace], count: int) -> list[Trace]:
    """A few telling traces: the deepest clean one, the deepest failing one, then one of each other reviews version."""
    def deepest(candidates: list[Trace]) -> Trace | None:
        return max(candidates, key=lambda t: (t.depth, len(t.spans))) if candidates else None

    def version(trace: Trace) -> object:
        return next((s.attributes.get("service.version") for s in trace.spans if s.service == "reviews"), None)

    clean = [t for t in traces if not t.errors]
    picks = [deepest(clean), deepest([t for t in traces if t.errors])]
    shown = {version(t) for t in picks if t is not None}
    for wanted in ("v1", "v2", "v3"):
        if wanted not in shown:
            picks.append(deepest([t for t in clean if version(t) == wanted]))
    return [t for t in picks if t is not None][:count]


def _collect_traces(jaeger: Jaeger | None, spans_file: Path, expected: int, since_us: int,
                    wait: float = 15.0) -> list[Trace]:
    """All demo traces once the exporters have flushed: poll until the span count stops growing."""
    deadline = time.monotonic() + wait
    last, traces = -1, []
    while True:
        if jaeger is not None:
            raw = JaegerClient(jaeger.query_url).traces(ROOT_SERVICE, limit=max(expected * 2, 100), lookback="1h",
                                                        start_us=since_us)
            traces = traces_from_jaeger(raw)
        else:
            try:
                with spans_file.open(encoding="utf-8") as lines:
                    traces = traces_from_otlp_lines(lines)
            except OSError:
                traces = []
        spans = sum(len(t.spans) for t in traces)
        if (spans == last and len(traces) >= expected) or time.monotonic() > deadline:
            return traces
        last = spans
        time.sleep(0.7)


def _heading(out: TextIO, style: Style, text: str) -> None:
    out.write("\n" + style.bold(f"── {text} " + "─" * max(0, 60 - len(text))) + "\n")


def _load_summary(result: LoadResult, mesh: Mesh) -> str:
    codes = ", ".join(f"{n} x {code or 'no answer'}" for code, n in sorted(result.statuses.items()))
    rate = result.sent / result.seconds if result.seconds else 0.0
    lines = [f"{result.sent} requests in {result.seconds:.1f}s ({rate:.0f} req/s): {codes}; "
             f"{result.degraded} pages served without reviews or ratings"]
    total = sum(result.versions.values()) or 1
    shares = "  ".join(f"{v} {result.versions[v] / total:.0%}" for v in sorted(result.versions))
    wanted = "  ".join(f"{v} {share}%" for v, share in REVIEWS_SPLIT.items())
    how = f"split by productpage's sidecar, rules want {wanted}" if mesh.rules else "picked at random by productpage"
    lines.append(f"reviews versions: {shares}   ({how})")
    return "\n".join(lines)


def _backend(args: argparse.Namespace, supervisor: Supervisor, workdir: Path,
             spans_file: Path) -> tuple[Jaeger | None, str, dict[str, str]]:
    """Where spans go: (the Jaeger or None, a line saying so, the exporter variables for every process)."""
    jaeger: Jaeger | None = None
    if args.jaeger:
        parsed = urllib.parse.urlsplit(args.jaeger)
        jaeger = Jaeger(args.jaeger, args.otlp or f"{parsed.scheme}://{parsed.hostname}:4318")
        backend = f"Jaeger at {args.jaeger}"
    elif (binary := find_jaeger_binary()) is not None and not args.no_jaeger:
        jaeger = start_jaeger(supervisor, binary, workdir)
        backend = f"Jaeger at {jaeger.query_url} (started from {binary})"
    else:
        why = "--no-jaeger" if args.no_jaeger else "no Jaeger binary: run `make demo` or pass --jaeger URL"
        backend = f"the file exporter, {spans_file} ({why})"
    env = ({"MESHTRACE_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_endpoint} if jaeger
           else {"MESHTRACE_EXPORTER": "file", "MESHTRACE_FILE": str(spans_file)})
    return jaeger, backend, env


def _rules_line(args: argparse.Namespace, rules: bool) -> str:
    if rules:
        split = " · ".join(f"{v} {share}%" for v, share in REVIEWS_SPLIT.items())
        return (f"traffic rules: {find_examples() / 'rules.yaml'} (reviews {split}; ratings "
                f"{RATINGS_FAULT_PERCENT:.0f}% aborted, 10% delayed)")
    why = "--rules off" if args.rules == "off" else "this sidecar has no --rules"
    return (f"traffic rules: not applied ({why}); productpage picks a reviews version at random and ratings fails "
            f"{RATINGS_FAULT_PERCENT:.0f}% of calls by itself")


def write_pictures(edges: list[Edge], workdir: Path) -> str:
    """graph.svg, and graph.png beside it when Pillow is installed; says where they are."""
    title = "bookinfo service graph"
    svg, png = workdir / "graph.svg", workdir / "graph.png"
    svg.write_text(render_svg(edges, title=title), encoding="utf-8")
    try:
        png.write_bytes(render_png(edges, title=title))
    except MeshtraceError:          # no Pillow: the SVG alone is the picture (the message says how to get both)
        return f"{svg} (pip install 'meshtrace[png]' for a PNG too)"
    return f"{svg} and {png.name}"


def _keep_running(out: TextIO, mesh: Mesh, jaeger: Jaeger | None) -> None:
    ui = f"; Jaeger UI: {jaeger.query_url}" if jaeger else ""
    scrape = " ".join(f"--metrics 127.0.0.1:{w.admin}" for w in mesh.workloads)
    out.write(f"the mesh keeps running (send requests to {mesh.entry}/productpage{ui}); Ctrl-C stops it\n"
              f"live graph: meshtrace graph {scrape} --interval 5\n")
    out.flush()
    while True:
        time.sleep(3600)


def _run(args: argparse.Namespace) -> int:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    # Ctrl-C must reach us even when started from a shell that ignores SIGINT for background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    out = sys.stdout
    style = Style.for_stream(out, None if args.color == "auto" else args.color == "always")
    width = args.width or terminal_width(out)
    requests = args.requests if args.requests is not None else (40 if args.short else 300)
    show = args.show if args.show is not None else (2 if args.short else 3)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="meshtrace-demo-"))
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    spans_file = workdir / "spans.jsonl"
    supervisor = Supervisor(workdir / "logs")
    summary: dict[str, object] = {"workdir": str(workdir)}
    try:
        find_examples()     # fail before starting anything when the services are not there
        jaeger, backend, exporter_env = _backend(args, supervisor, workdir, spans_file)
        rules = proxy_supports_rules() if args.rules == "auto" else args.rules == "on"
        out.write(style.bold("meshtrace demo") + " · Bookinfo: productpage → details, reviews v1|v2|v3 → ratings "
                  f"→ details\ntracing to {backend}\n{_rules_line(args, rules)}\n"
                  "starting 6 services and 6 sidecars on 127.0.0.1 …\n")
        out.flush()
        started = time.monotonic()
        mesh = start_mesh(supervisor, exporter_env, workdir=workdir, rules=rules, seed=args.seed)
        out.write(f"ready in {time.monotonic() - started:.1f}s; sending traffic to {mesh.entry}/productpage\n")
        out.flush()
        summary.update(jaeger=jaeger.query_url if jaeger else None, spans_file=str(spans_file), rules=rules,
                       metrics=mesh.metrics_urls)
        load_started_us = time.time_ns() // 1000
        result = run_load(mesh.entry, requests=requests if not args.duration else None, duration=args.duration,
                          concurrency=args.concurrency, progress=ProgressBar(requests, args.duration))
        samples = fetch_metrics(mesh.metrics_urls)
        edges = edges_from_samples(samples, by="app", seconds=result.seconds)
        workload_edges = edges_from_samples(samples, by="workload", seconds=result.seconds)

        _heading(out, style, "requests")
        out.write(_load_summary(result, mesh) + "\n")

        traces = _collect_traces(jaeger, spans_file, expected=result.sent, since_us=load_started_us)
        chosen = pick_traces(traces, show)
        _heading(out, style, f"traces ({len(chosen)} of {len(traces)})")
        out.write("\n\n".join(render_waterfall(t, width=width, style=style) for t in chosen) + "\n")

        _heading(out, style, "service graph (from the sidecars' istio_* metrics)")
        out.write(render_graph_text(edges, width=width, style=style) + "\n")
        _heading(out, style, "per workload")
        out.write(render_graph_text(workload_edges, width=width, style=style).split("\n\n", 1)[-1] + "\n")
        pictures = write_pictures(edges, workdir)

        _heading(out, style, "next")
        where = f"--jaeger {jaeger.query_url}" if jaeger else f"--file {spans_file}"
        out.write(f"graph picture: {pictures}\nlogs: {workdir / 'logs'}\n"
                  f"more traces: meshtrace traces {where} --service {ROOT_SERVICE} --limit 5\n")
        if jaeger and jaeger.child is not None and not args.keep:
            out.write("(the demo's Jaeger stops with the demo: run `meshtrace demo --keep` to browse it)\n")
        summary.update(
            sent=result.sent, statuses={str(k): v for k, v in result.statuses.items()},
            versions=dict(result.versions), degraded=result.degraded, traces=len(traces),
            trace_ids=[t.trace_id for t in chosen],
            edges=[[e.source, e.destination, e.requests, e.errors] for e in edges],
            workload_edges=[[e.source, e.destination, e.requests, e.errors] for e in workload_edges],
        )
        if args.keep:
            _keep_running(out, mesh, jaeger)
        return 0
    finally:
        supervisor.stop()
        summary["pids"] = supervisor.pids
        if args.summary:
            Path(args.summary).write_text(json.dumps(summary, indent=2), encoding="utf-8")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "demo", help="run the Bookinfo demo mesh and show its traces and service graph",
        description="Start examples/bookinfo (Flask, Django, requests, httpx; each service under meshtrace-run "
                    "behind a meshtrace sidecar) on 127.0.0.1, send it traffic, then show trace waterfalls, the "
                    "service graph and per-edge rates, error rates and latencies. Every process it starts is "
                    "stopped on exit, Ctrl-C included.")
    parser.add_argument("--requests", type=int, help="requests to send (default 300; 40 with --short)")
    parser.add_argument("--duration", type=float, help="send for this many seconds instead")
    parser.add_argument("--concurrency", type=int, default=4, help="parallel clients (default 4)")
    parser.add_argument("--short", action="store_true", help="a quick run (for tests and impatient people)")
    parser.add_argument("--jaeger", metavar="URL", help="use this Jaeger (query URL) instead of starting one")
    parser.add_argument("--otlp", metavar="URL", help="its OTLP/HTTP endpoint (default: the --jaeger host, port 4318)")
    parser.add_argument("--no-jaeger", action="store_true", help="use the file exporter even if Jaeger is found")
    parser.add_argument("--rules", choices=["auto", "on", "off"], default="auto",
                        help="apply examples/bookinfo/rules.yaml in the sidecars (auto: if they support it)")
    parser.add_argument("--seed", type=int,
                        help="seed the sidecars' traffic-split draws: the same picks on every run (default: random)")
    parser.add_argument("--keep", action="store_true",
                        help="after the report, keep the mesh (and its Jaeger) running until Ctrl-C")
    parser.add_argument("--show", type=int, help="trace waterfalls to show (default 3)")
    parser.add_argument("--workdir", metavar="DIR", help="where logs, spans and the graph go (default: a temp dir)")
    parser.add_argument("--summary", metavar="PATH", help="also write a JSON summary (pids, edges, trace ids)")
    parser.add_argument("--width", type=int, default=0, help="columns (default: the terminal's)")
    parser.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    parser.set_defaults(func=_run)
