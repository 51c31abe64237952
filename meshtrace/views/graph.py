"""The service graph: who calls whom, how often, how often it fails and how fast, as edges and as text.

Edges come from the sidecars' Istio metrics or from Jaeger's dependencies API. From metrics, each request is
counted once: by the caller's sidecar (`reporter="source"`, which also sees faults its own rules inject) or, for a
caller without a sidecar, by the callee's (`reporter="destination"`, the caller then being `unknown`).
The pictures are drawn by `graph_svg` and `graph_png` from one `graph_layout`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from meshtrace.views.promtext import Sample
from meshtrace.views.style import Style, truncate

__all__ = ["UNKNOWN", "Edge", "edges_from_dependencies", "edges_from_samples", "render_graph_text"]

UNKNOWN = "unknown"


@dataclass
class Edge:
    source: str
    destination: str
    requests: float = 0.0
    errors: float = 0.0                   # 5xx answers (and local replies such as injected aborts)
    seconds: float | None = None          # the window the counts cover, for rates
    buckets: dict[float, float] = field(default_factory=dict)   # duration upper bound (ms) -> cumulative count
    measured: bool = True                 # False when the source knows calls only (Jaeger dependencies)

    @property
    def rate(self) -> float | None:
        return self.requests / self.seconds if self.seconds else None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def quantile(self, q: float) -> float | None:
        """Prometheus' histogram_quantile: linear interpolation inside the bucket holding the q-th request."""
        bounds = sorted(self.buckets)
        if not bounds or self.buckets[bounds[-1]] <= 0:
            return None
        total = self.buckets[bounds[-1]]
        rank = q * total
        lower, below = 0.0, 0.0
        for bound in bounds:
            count = self.buckets[bound]
            if count >= rank:
                if bound == float("inf"):
                    return lower
                inside = count - below
                return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
            lower, below = bound, count
        return lower


def _name(sample: Sample, side: str, by: str) -> str:
    value = sample.label(f"{side}_{by}", UNKNOWN)
    if value == UNKNOWN and side == "destination":
        # A callee without a sidecar (or a reply the caller's sidecar made itself): only its service is known.
        service = sample.label("destination_service", UNKNOWN)
        value = service if _is_ip(service) else sample.label("destination_service_name", UNKNOWN)
    return value or UNKNOWN


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _counted(sample: Sample) -> bool:
    reporter = sample.label("reporter")
    return reporter == "source" or (reporter == "destination" and sample.label("source_workload", UNKNOWN) == UNKNOWN)


def edges_from_samples(samples: Iterable[Sample], *, by: str = "app", seconds: float | None = None) -> list[Edge]:
    """Edges from `istio_requests_total` and `istio_request_duration_milliseconds_bucket` samples.

    `by` picks the label naming a node: `app` (reviews) or `workload` (reviews-v2).
    """
    edges: dict[tuple[str, str], Edge] = {}
    for sample in samples:
        if sample.name not in ("istio_requests_total", "istio_request_duration_milliseconds_bucket"):
            continue
        if not _counted(sample):
            continue
        key = (_name(sample, "source", by), _name(sample, "destination", by))
        edge = edges.setdefault(key, Edge(*key, seconds=seconds))
        if sample.name == "istio_requests_total":
            edge.requests += sample.value
            code = sample.label("response_code", "0")
            if code.startswith("5") or code == "0":
                edge.errors += sample.value
        else:
            bound = float(sample.label("le", "+Inf").replace("+Inf", "inf"))
            edge.buckets[bound] = edge.buckets.get(bound, 0.0) + sample.value
    return sorted((e for e in edges.values() if e.requests > 0), key=lambda e: (e.source, e.destination))


def edges_from_dependencies(data: Iterable[Mapping[str, object]], *, fold_sidecars: bool = True) -> list[Edge]:
    """Edges from Jaeger's `/api/dependencies` data; with `fold_sidecars`, `reviews-sidecar` counts as `reviews`."""
    edges: dict[tuple[str, str], Edge] = {}
    for item in data:
        parent, child = str(item.get("parent", UNKNOWN)), str(item.get("child", UNKNOWN))
        if fold_sidecars:
            parent, child = parent.removesuffix("-sidecar"), child.removesuffix("-sidecar")
            if parent == child:
                continue
        calls = item.get("callCount", 0)
        edge = edges.setdefault((parent, child), Edge(parent, child, measured=False))
        edge.requests += float(calls) if isinstance(calls, int | float) else 0.0
    return sorted(edges.values(), key=lambda e: (e.source, e.destination))


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}ms" if value >= 10 else f"{value:.1f}ms"


def _callers_tree(edges: Sequence[Edge]) -> list[tuple[str, str, str]]:
    """(prefix, node, suffix) lines of the graph unfolded from its entry points; a node already on the current
    path ends its branch with ↺ (a call cycle)."""
    callees: dict[str, list[str]] = {}
    callers: set[str] = set()
    for edge in edges:
        callees.setdefault(edge.source, []).append(edge.destination)
        callers.add(edge.destination)
    roots = [node for node in callees if node not in callers] or sorted(callees)[:1]
    lines: list[tuple[str, str, str]] = []

    def walk(node: str, prefix: str, rest: str, path: tuple[str, ...]) -> None:
        if node in path:
            lines.append((prefix, node, " ↺"))
            return
        lines.append((prefix, node, ""))
        children = sorted(callees.get(node, []))
        for i, child in enumerate(children):
            last = i == len(children) - 1
            walk(child, rest + ("└─► " if last else "├─► "), rest + ("    " if last else "│   "), (*path, node))

    for root in sorted(roots):
        walk(root, "", "", ())
    return lines


def render_graph_text(edges: Sequence[Edge], *, width: int = 100, style: Style | None = None) -> str:
    """The graph as a tree from its entry points, then one line per edge with rate, errors and latency."""
    style = style or Style(False)
    if not edges:
        return "no requests seen: the service graph is empty"
    out = [style.bold("service graph")]
    for prefix, node, suffix in _callers_tree(edges):
        out.append("  " + prefix + style.service(node) + suffix)
    out.append("")
    name_width = max(8, min(24, max(len(e.source) for e in edges)), min(24, max(len(e.destination) for e in edges)))
    header = (f"  {'caller':<{name_width}}    {'callee':<{name_width}}  {'requests':>8} {'req/s':>7} "
              f"{'errors':>7} {'p50':>7} {'p99':>7}")
    out.append(style.dim(header[:width]))
    for edge in edges:
        rate = f"{edge.rate:.1f}" if edge.rate is not None else "-"
        errors = f"{edge.error_rate * 100:.1f}%" if edge.measured else "-"
        if edge.errors:
            errors = style.error(f"{errors:>7}")
        line = (f"  {style.service(edge.source, truncate(edge.source, name_width))} ─► "
                f"{style.service(edge.destination, truncate(edge.destination, name_width))}  "
                f"{edge.requests:>8.0f} {rate:>7} {errors:>7} {_ms(edge.quantile(0.5)):>7} "
                f"{_ms(edge.quantile(0.99)):>7}")
        out.append(line)
    return "\n".join(out)
