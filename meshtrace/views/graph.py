"""The service graph: who calls whom, how often, how often it fails and how fast, as text or as an SVG picture.

Edges come from the sidecars' Istio metrics or from Jaeger's dependencies API. From metrics, each request is
counted once: by the caller's sidecar (`reporter="source"`, which also sees faults its own rules inject) or, for a
caller without a sidecar, by the callee's (`reporter="destination"`, the caller then being `unknown`).
"""

from __future__ import annotations

import html
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from meshtrace.views.promtext import Sample
from meshtrace.views.style import Style, truncate

__all__ = ["Edge", "edges_from_dependencies", "edges_from_samples", "render_graph_text", "render_svg"]

UNKNOWN = "unknown"
_GREY, _RED = "#555555", "#c62828"
_ARC, _ARC_STEP = 50, 25        # how far an edge skipping columns rises above the nodes, and more per extra column


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


def _layers(edges: Sequence[Edge]) -> dict[str, int]:
    """Each node's column: the longest call path reaching it from an entry point (cycles cut)."""
    nodes = sorted({e.source for e in edges} | {e.destination for e in edges})
    layer = dict.fromkeys(nodes, 0)
    for _ in range(len(nodes)):          # Bellman-Ford style relaxation; a cycle stops growing after |V| rounds
        changed = False
        for edge in edges:
            if edge.source != edge.destination and layer[edge.destination] < layer[edge.source] + 1 <= len(nodes):
                layer[edge.destination] = layer[edge.source] + 1
                changed = True
        if not changed:
            break
    return layer


def render_svg(edges: Sequence[Edge], *, title: str = "service graph") -> str:
    """A standalone SVG: nodes in columns by call depth, curved edges labelled with rate and error rate."""
    node_w, node_h, col_gap, row_gap, margin = 150, 40, 150, 40, 30
    layer = _layers(edges)
    columns: dict[int, list[str]] = {}
    for node in sorted(layer, key=lambda n: (layer[n], n)):
        columns.setdefault(layer[node], []).append(node)
    rows = max((len(c) for c in columns.values()), default=1)
    # An edge that skips columns arcs over the nodes between; a backward one loops under them. Make room for both.
    spans = [layer[e.destination] - layer[e.source] for e in edges]
    arc_room = max((_ARC + _ARC_STEP * (n - 2) for n in spans if n > 1), default=0) + (20 if max(spans, default=0) > 1
                                                                                         else 0)
    loop_room = 70 if any(n <= 0 for n in spans) else 0
    top = margin + 30 + arc_room
    width = margin * 2 + len(columns) * node_w + max(0, len(columns) - 1) * col_gap
    height = top + rows * node_h + max(0, rows - 1) * row_gap + loop_room + margin
    pos: dict[str, tuple[float, float]] = {}
    for col, names in columns.items():
        offset = (rows - len(names)) * (node_h + row_gap) / 2
        for row, name in enumerate(names):
            pos[name] = (margin + col * (node_w + col_gap), top + offset + row * (node_h + row_gap))
    esc = html.escape
    marker = ('<marker id="{id}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
              'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="{fill}"/></marker>')
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">',
        f"<title>{esc(title)}</title>",
        "<defs>" + marker.format(id="arrow", fill=_GREY) + marker.format(id="arrow-error", fill=_RED) + "</defs>",
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{margin}" y="{margin}" font-size="15" font-weight="bold" fill="#222">{esc(title)}</text>',
    ]
    for edge, span in zip(edges, spans, strict=True):
        x1, y1 = pos[edge.source]
        x2, y2 = pos[edge.destination]
        if span <= 0:                     # same column or backwards: loop under the nodes
            sx, sy, dx, dy = x1 + node_w / 2, y1 + node_h, x2 + node_w / 2, y2 + node_h
            path = f"M {sx} {sy} C {sx} {sy + 60}, {dx} {dy + 60}, {dx} {dy}"
            lx, ly = (sx + dx) / 2, max(sy, dy) + 48
        elif span > 1:                    # skips columns: arc over them, from top to top
            rise = _ARC + _ARC_STEP * (span - 2)
            sx, sy, dx, dy = x1 + node_w * 0.75, y1, x2 + node_w * 0.25, y2
            lift = min(sy, dy) - rise
            path = f"M {sx} {sy} C {sx} {lift}, {dx} {lift}, {dx} {dy}"
            lx, ly = (sx + dx) / 2, min(sy, dy) - rise * 0.75 - 6
        else:
            sx, sy, dx, dy = x1 + node_w, y1 + node_h / 2, x2, y2 + node_h / 2
            bend = (dx - sx) / 2
            path = f"M {sx} {sy} C {sx + bend} {sy}, {dx - bend} {dy}, {dx} {dy}"
            lx, ly = (sx + dx) / 2, (sy + dy) / 2 - 6
        colour = _RED if edge.errors else _GREY
        label = f"{edge.rate:.1f} rps" if edge.rate is not None else f"{edge.requests:.0f} req"
        if edge.measured:
            label += f" · {edge.error_rate * 100:.1f}% err"
        parts.append(f'<path class="edge" data-source="{esc(edge.source)}" data-destination="{esc(edge.destination)}" '
                     f'd="{path}" fill="none" stroke="{colour}" stroke-width="1.6" '
                     f'marker-end="url(#{"arrow-error" if edge.errors else "arrow"})"/>')
        parts.append(f'<text x="{lx}" y="{ly}" text-anchor="middle" fill="{colour}" '
                     f'stroke="#fff" stroke-width="3" paint-order="stroke">{esc(label)}</text>')
    for name, (x, y) in pos.items():
        fill = "#eeeeee" if name == UNKNOWN else "#e3f2fd"
        parts.append(f'<g class="node" data-name="{esc(name)}"><rect x="{x}" y="{y}" width="{node_w}" '
                     f'height="{node_h}" rx="8" fill="{fill}" stroke="#1565c0" stroke-width="1.2"/>'
                     f'<text x="{x + node_w / 2}" y="{y + node_h / 2 + 4}" text-anchor="middle" fill="#0d47a1" '
                     f'font-size="13">{esc(truncate(name, 22).rstrip())}</text></g>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
