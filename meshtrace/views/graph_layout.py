"""Where everything goes in a service-graph picture, so the SVG and the PNG show the same drawing.

Theory of operation. Nodes sit in columns by call depth (the longest call path reaching them from an entry
point; a call that closes a cycle is found by a depth-first walk and left out of that count) and are centred
vertically in their column. Every edge is one cubic Bézier curve: between
neighbouring columns it runs from the caller's right side to the callee's left side; an edge that skips columns
arcs over the nodes between, from top to top, higher for longer skips; an edge within a column or backwards
loops under the nodes. The picture is made tall enough for the arcs and loops. Labels (rate and error rate)
sit at the middle of their curve, red when the edge has errors. The renderers only paint what is here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from meshtrace.views.graph import UNKNOWN, Edge
from meshtrace.views.style import truncate

__all__ = ["EdgeShape", "GraphLayout", "NodeBox", "Point", "layout_graph"]

Point = tuple[float, float]

GREY, RED = "#555555", "#c62828"
NODE_FILL, UNKNOWN_FILL, NODE_STROKE, NODE_TEXT, TITLE_TEXT = "#e3f2fd", "#eeeeee", "#1565c0", "#0d47a1", "#222222"
NODE_W, NODE_H, COL_GAP, ROW_GAP, MARGIN = 150, 40, 150, 40, 30
_ARC, _ARC_STEP = 50, 25        # how far an edge skipping columns rises above the nodes, and more per extra column


@dataclass(frozen=True)
class NodeBox:
    name: str
    x: float
    y: float
    width: float
    height: float
    fill: str
    label: str              # the name, shortened to fit the box

    @property
    def centre(self) -> Point:
        return self.x + self.width / 2, self.y + self.height / 2


@dataclass(frozen=True)
class EdgeShape:
    edge: Edge
    curve: tuple[Point, Point, Point, Point]     # start, two control points, end (the arrow's tip)
    label: str
    label_at: Point                              # the label's horizontal centre and baseline
    colour: str

    @property
    def failing(self) -> bool:
        return self.edge.errors > 0


@dataclass(frozen=True)
class GraphLayout:
    title: str
    title_at: Point                              # the title's left end and baseline
    width: int
    height: int
    nodes: list[NodeBox]
    edges: list[EdgeShape]


def _forward_calls(edges: Sequence[Edge]) -> dict[str, list[str]]:
    """Callees per caller without the calls that close a cycle: a depth-first walk from the entry points (then
    from whatever it has not reached) drops every call back to a node on the current path, and self-calls."""
    callees: dict[str, list[str]] = {}
    for edge in edges:
        callees.setdefault(edge.source, []).append(edge.destination)
        callees.setdefault(edge.destination, [])
    called = {e.destination for e in edges if e.source != e.destination}
    forward: dict[str, list[str]] = {node: [] for node in callees}
    done: set[str] = set()
    on_path: set[str] = set()

    def walk(node: str) -> None:
        on_path.add(node)
        for callee in sorted(set(callees[node])):
            if callee in on_path:
                continue                          # closes a cycle: drawn, but not used for columns
            forward[node].append(callee)
            if callee not in done:
                walk(callee)
        on_path.discard(node)
        done.add(node)

    for start in [n for n in sorted(callees) if n not in called] + sorted(callees):
        if start not in done:
            walk(start)
    return forward


def _layers(edges: Sequence[Edge]) -> dict[str, int]:
    """Each node's column: the longest call path reaching it from an entry point, cycles cut. Every column but
    the first holds a callee of the column before it, so no column is empty."""
    forward = _forward_calls(edges)
    layer = dict.fromkeys(forward, 0)
    order: list[str] = []                         # reverse post-order of the acyclic calls: callers first
    seen: set[str] = set()

    def visit(node: str) -> None:
        seen.add(node)
        for callee in forward[node]:
            if callee not in seen:
                visit(callee)
        order.append(node)

    for node in sorted(forward):
        if node not in seen:
            visit(node)
    for node in reversed(order):
        for callee in forward[node]:
            layer[callee] = max(layer[callee], layer[node] + 1)
    return layer


def _label(edge: Edge) -> str:
    label = f"{edge.rate:.1f} rps" if edge.rate is not None else f"{edge.requests:.0f} req"
    if edge.measured:
        label += f" · {edge.error_rate * 100:.1f}% err"
    return label


def _control(extreme: float, sy: float, dy: float) -> float:
    """The height of both control points that puts a curve's highest (or lowest) point at `extreme`: at its
    middle a cubic curve with both control points at height c is at (sy + dy) / 8 + 3c / 4."""
    return (extreme - (sy + dy) / 8) / 0.75


def _shape(edge: Edge, span: int, source: Point, destination: Point, between: Sequence[Point]) -> EdgeShape:
    """The curve and label of one edge; `between` are the corners of the nodes it must pass: the tops of those in
    the columns it skips, or the bottoms of those in the columns it loops back under."""
    (x1, y1), (x2, y2) = source, destination
    if edge.source == edge.destination:   # calls itself: a small loop under its box
        sx, sy, dx, dy = x1 + NODE_W * 0.3, y1 + NODE_H, x1 + NODE_W * 0.7, y1 + NODE_H
        curve = ((sx, sy), (sx - 20, sy + 40), (dx + 20, dy + 40), (dx, dy))
        label_at = ((sx + dx) / 2, sy + 44)
    elif span <= 0:                   # same column or backwards: loop under the nodes
        sx, sy, dx, dy = x1 + NODE_W / 2, y1 + NODE_H, x2 + NODE_W / 2, y2 + NODE_H
        lowest = max([sy, dy, *(y for _, y in between)]) + 45
        c = _control(lowest, sy, dy)
        curve = ((sx, sy), (sx, c), (dx, c), (dx, dy))
        label_at = ((sx + dx) / 2, lowest + 15)          # hanging under the loop
    elif span > 1:                    # skips columns: arc over them, from top to top
        rise = _ARC + _ARC_STEP * (span - 2)
        sx, sy, dx, dy = x1 + NODE_W * 0.75, y1, x2 + NODE_W * 0.25, y2
        highest = min([sy, dy, *(y for _, y in between)]) - rise * 0.75
        c = _control(highest, sy, dy)
        curve = ((sx, sy), (sx, c), (dx, c), (dx, dy))
        label_at = ((sx + dx) / 2, highest - 6)
    else:
        sx, sy, dx, dy = x1 + NODE_W, y1 + NODE_H / 2, x2, y2 + NODE_H / 2
        bend = (dx - sx) / 2
        curve = ((sx, sy), (sx + bend, sy), (dx - bend, dy), (dx, dy))
        label_at = ((sx + dx) / 2, (sy + dy) / 2 - 8)  # descenders and halo clear of the curve
    return EdgeShape(edge, curve, _label(edge), label_at, RED if edge.errors else GREY)


def layout_graph(edges: Sequence[Edge], *, title: str = "service graph") -> GraphLayout:
    layer = _layers(edges)
    columns: dict[int, list[str]] = {}
    for node in sorted(layer, key=lambda n: (layer[n], n)):
        columns.setdefault(layer[node], []).append(node)
    rows = max((len(c) for c in columns.values()), default=1)
    # An edge that skips columns arcs over the nodes between; a backward one loops under them. Make room for both.
    spans = [layer[e.destination] - layer[e.source] for e in edges]
    arc_room = max((_ARC + _ARC_STEP * (n - 2) for n in spans if n > 1), default=0)
    arc_room += 20 if max(spans, default=0) > 1 else 0
    loop_room = 70 if any(n <= 0 for n in spans) else 0
    top = MARGIN + 30 + arc_room
    width = MARGIN * 2 + len(columns) * NODE_W + max(0, len(columns) - 1) * COL_GAP
    height = top + rows * NODE_H + max(0, rows - 1) * ROW_GAP + loop_room + MARGIN
    pos: dict[str, Point] = {}
    for col, names in columns.items():
        offset = (rows - len(names)) * (NODE_H + ROW_GAP) / 2
        for row, name in enumerate(names):
            pos[name] = (MARGIN + col * (NODE_W + COL_GAP), top + offset + row * (NODE_H + ROW_GAP))
    nodes = [NodeBox(name, x, y, NODE_W, NODE_H, UNKNOWN_FILL if name == UNKNOWN else NODE_FILL,
                     truncate(name, 22).rstrip()) for name, (x, y) in pos.items()]
    shapes = []
    for edge, span in zip(edges, spans, strict=True):
        first, last = sorted((layer[edge.source], layer[edge.destination]))
        if span > 1:
            between = [pos[n] for c in range(first + 1, last) for n in columns[c]]
        else:
            between = [(x, y + NODE_H) for c in range(first, last + 1) for x, y in (pos[n] for n in columns[c])]
        shapes.append(_shape(edge, span, pos[edge.source], pos[edge.destination], between))
    return GraphLayout(title, (MARGIN, MARGIN), width, height, nodes, shapes)
