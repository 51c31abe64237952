"""The service graph as a standalone SVG picture.

Theory of operation. Paints a `GraphLayout` as it is: edges first (so nodes cover their ends), each a cubic path
with an arrowhead marker, then every label with a white halo (after all curves, so no curve is drawn across a
label), then the nodes. Edges and nodes carry `data-` attributes naming their services, for tests and for
styling by hand.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from meshtrace.views.graph import Edge
from meshtrace.views.graph_layout import GREY, NODE_STROKE, NODE_TEXT, RED, TITLE_TEXT, layout_graph

__all__ = ["render_svg"]

_MARKER = ('<marker id="{id}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="{fill}"/></marker>')


def render_svg(edges: Sequence[Edge], *, title: str = "service graph") -> str:
    """A standalone SVG: nodes in columns by call depth, curved edges labelled with rate and error rate."""
    layout = layout_graph(edges, title=title)
    width, height, esc = layout.width, layout.height, html.escape
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">',
        f"<title>{esc(title)}</title>",
        "<defs>" + _MARKER.format(id="arrow", fill=GREY) + _MARKER.format(id="arrow-error", fill=RED) + "</defs>",
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{layout.title_at[0]}" y="{layout.title_at[1]}" font-size="15" font-weight="bold" '
        f'fill="{TITLE_TEXT}">{esc(title)}</text>',
    ]
    for shape in layout.edges:
        (sx, sy), (c1x, c1y), (c2x, c2y), (dx, dy) = shape.curve
        edge = shape.edge
        parts.append(f'<path class="edge" data-source="{esc(edge.source)}" data-destination="{esc(edge.destination)}" '
                     f'd="M {sx} {sy} C {c1x} {c1y}, {c2x} {c2y}, {dx} {dy}" fill="none" stroke="{shape.colour}" '
                     f'stroke-width="1.6" marker-end="url(#{"arrow-error" if shape.failing else "arrow"})"/>')
    for shape in layout.edges:
        lx, ly = shape.label_at
        parts.append(f'<text x="{lx}" y="{ly}" text-anchor="middle" fill="{shape.colour}" '
                     f'stroke="#fff" stroke-width="3" paint-order="stroke">{esc(shape.label)}</text>')
    for node in layout.nodes:
        cx, cy = node.centre
        parts.append(f'<g class="node" data-name="{esc(node.name)}"><rect x="{node.x}" y="{node.y}" '
                     f'width="{node.width}" height="{node.height}" rx="8" fill="{node.fill}" stroke="{NODE_STROKE}" '
                     f'stroke-width="1.2"/><text x="{cx}" y="{cy + 4}" text-anchor="middle" fill="{NODE_TEXT}" '
                     f'font-size="13">{esc(node.label)}</text></g>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
