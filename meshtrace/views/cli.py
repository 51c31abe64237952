"""`meshtrace traces` and `meshtrace graph`: the views as subcommands (registered through `meshtrace.commands`)."""

from __future__ import annotations

import argparse
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from meshtrace.errors import MeshtraceError
from meshtrace.views.graph import Edge, edges_from_dependencies, edges_from_samples, render_graph_text
from meshtrace.views.graph_png import render_png
from meshtrace.views.graph_svg import render_svg
from meshtrace.views.jaeger_client import JaegerClient
from meshtrace.views.model import Trace, traces_from_jaeger, traces_from_otlp_lines
from meshtrace.views.promtext import Sample, delta, parse_samples
from meshtrace.views.style import Style, terminal_width
from meshtrace.views.waterfall import render_waterfall

__all__ = ["fetch_metrics", "load_traces", "register_graph", "register_traces"]


def _style(choice: str) -> Style:
    return Style.for_stream(sys.stdout, None if choice == "auto" else choice == "always")


def load_traces(*, jaeger: str | None = None, file: str | None = None, service: str | None = None,
                trace_ids: Sequence[str] = (), limit: int = 5) -> list[Trace]:
    """Traces from Jaeger or an OTLP/JSON file, newest last, at most `limit` unless ids are asked for."""
    if file is not None:
        try:
            with open(file, encoding="utf-8") as lines:
                traces = traces_from_otlp_lines(lines)
        except OSError as exc:
            raise MeshtraceError(f"cannot read {file}: {exc.strerror or exc}") from exc
        if trace_ids:
            wanted = {t.lower() for t in trace_ids}
            return [t for t in traces if t.trace_id.lower() in wanted]
        if service:
            traces = [t for t in traces if service in t.services]
        return traces[-limit:] if limit > 0 else traces
    if jaeger is None:
        raise MeshtraceError("say where the traces are: --jaeger URL or --file spans.jsonl")
    client = JaegerClient(jaeger)
    if trace_ids:
        return [t for trace_id in trace_ids for t in traces_from_jaeger(client.trace(trace_id))]
    if not service:
        known = ", ".join(client.services()) or "none yet"
        raise MeshtraceError(f"--service is needed with --jaeger (services in Jaeger: {known})")
    traces = traces_from_jaeger(client.traces(service, limit=limit))
    traces.sort(key=lambda t: t.start_us)
    return traces


def _run_traces(args: argparse.Namespace) -> int:
    traces = load_traces(jaeger=args.jaeger, file=args.file, service=args.service, trace_ids=args.trace_id or (),
                         limit=args.limit)
    if not traces:
        print("no traces found", file=sys.stderr)
        return 1
    width = args.width or terminal_width(sys.stdout)
    style = _style(args.color)
    print("\n\n".join(render_waterfall(trace, width=width, style=style) for trace in traces))
    return 0


def register_traces(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "traces", help="show trace waterfalls in the terminal",
        description="Trace waterfalls in the terminal: one line per span with service, operation, offset, "
                    "duration bar and error mark, from Jaeger's query API or a `file` exporter output.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--jaeger", metavar="URL", help="Jaeger query URL, e.g. http://127.0.0.1:16686")
    source.add_argument("--file", metavar="PATH", help="OTLP/JSON lines written by the `file` exporter")
    parser.add_argument("--service", help="traces that involve this service")
    parser.add_argument("--trace-id", action="append", metavar="ID", help="show this trace (repeatable)")
    parser.add_argument("--limit", type=int, default=5, help="at most this many traces (default 5)")
    parser.add_argument("--width", type=int, default=0, help="columns (default: the terminal's)")
    parser.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    parser.set_defaults(func=_run_traces)


def _metrics_url(text: str) -> str:
    url = text if "://" in text else f"http://{text}"
    return url if url.rstrip("/").endswith("/metrics") else url.rstrip("/") + "/metrics"


def fetch_metrics(urls: Sequence[str], timeout: float = 5.0) -> list[Sample]:
    """Every sample of every sidecar admin `/metrics` in `urls` (a bare host:port gets `/metrics`)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    samples: list[Sample] = []
    for text in urls:
        url = _metrics_url(text)
        try:
            with opener.open(url, timeout=timeout) as response:
                samples.extend(parse_samples(response.read().decode("utf-8", "replace")))
        except OSError as exc:
            raise MeshtraceError(f"cannot scrape {url}: {exc}") from exc
    return samples


def load_edges(*, metrics: Sequence[str] = (), jaeger: str | None = None, by: str = "app",
               interval: float = 0.0, lookback: float = 3600.0) -> list[Edge]:
    if metrics:
        if interval > 0:
            before = fetch_metrics(metrics)
            time.sleep(interval)
            return edges_from_samples(delta(fetch_metrics(metrics), before), by=by, seconds=interval)
        return edges_from_samples(fetch_metrics(metrics), by=by)
    if jaeger is None:
        raise MeshtraceError("say where the graph comes from: --metrics URL (repeatable) or --jaeger URL")
    return edges_from_dependencies(JaegerClient(jaeger).dependencies(lookback))


def _run_graph(args: argparse.Namespace) -> int:
    edges = load_edges(metrics=args.metrics or (), jaeger=args.jaeger, by=args.by, interval=args.interval,
                       lookback=args.lookback)
    # Render the PNG first: without Pillow it fails, and it should fail before printing half a result.
    png = render_png(edges) if args.png else None
    print(render_graph_text(edges, width=args.width or terminal_width(sys.stdout), style=_style(args.color)))
    written = []
    if args.svg:
        Path(args.svg).write_text(render_svg(edges), encoding="utf-8")
        written.append(args.svg)
    if png is not None:
        Path(args.png).write_bytes(png)
        written.append(args.png)
    if written:
        print("\n" + "\n".join(f"wrote {path}" for path in written))
    return 0 if edges else 1


def register_graph(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "graph", help="show the service graph (who calls whom) from sidecar metrics or Jaeger",
        description="The service graph with request counts, rates, error rates and p50/p99 latencies per edge, "
                    "from the sidecars' /metrics (Istio metrics) or Jaeger's dependencies API.")
    parser.add_argument("--metrics", action="append", metavar="URL",
                        help="a sidecar admin address or /metrics URL (repeat for every sidecar)")
    parser.add_argument("--jaeger", metavar="URL", help="Jaeger query URL (uses /api/dependencies)")
    parser.add_argument("--by", choices=["app", "workload"], default="app",
                        help="name nodes by app (reviews) or workload (reviews-v2); metrics only")
    parser.add_argument("--interval", type=float, default=0.0,
                        help="scrape twice this many seconds apart and show rates (default: totals)")
    parser.add_argument("--lookback", type=float, default=3600.0, help="Jaeger window in seconds (default 3600)")
    parser.add_argument("--svg", metavar="PATH", help="also write the graph as an SVG picture")
    parser.add_argument("--png", metavar="PATH", help="also write the graph as a PNG picture (needs meshtrace[png])")
    parser.add_argument("--width", type=int, default=0, help="columns (default: the terminal's)")
    parser.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    parser.set_defaults(func=_run_graph)
