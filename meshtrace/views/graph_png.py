"""The service graph as a PNG picture: the SVG's drawing, rasterised with Pillow.

Theory of operation. Paints the same `GraphLayout` as `graph_svg`, in the same order (edges, then their labels over
every curve, then nodes), so the two pictures match. Pillow draws lines and shapes without anti-aliasing, so the
picture is painted at twice the size asked for and shrunk with a Lanczos filter, which smooths the curves and
arrowheads. Curves are flattened into short straight segments. Text uses DejaVu Sans when the system has it (close
to the SVG's Helvetica/Arial) and Pillow's built-in scalable font otherwise, so no system library or font is
required. Pillow is the optional `png` extra: without it, asking for a PNG is a clear error and nothing else
changes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

from meshtrace.errors import MeshtraceError
from meshtrace.views.graph import Edge
from meshtrace.views.graph_layout import NODE_STROKE, NODE_TEXT, TITLE_TEXT, EdgeShape, Point, layout_graph

if TYPE_CHECKING:
    from PIL import ImageDraw, ImageFont

    Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

__all__ = ["bezier_points", "render_png"]

_SUPERSAMPLE = 2
_STROKE, _NODE_STROKE, _LABEL_HALO = 1.6, 1.2, 2.0     # as the SVG's stroke widths (its halo is 3 wide, centred)
_ARROW = 7 * _STROKE                                   # the SVG marker: 7 stroke widths long and wide


def bezier_points(curve: tuple[Point, Point, Point, Point], steps: int = 48) -> list[Point]:
    """Points along a cubic Bézier curve, both ends included."""
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = curve
    points = []
    for i in range(steps + 1):
        t = i / steps
        a, b, c, d = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t * t, t ** 3
        points.append((a * x0 + b * x1 + c * x2 + d * x3, a * y0 + b * y1 + c * y2 + d * y3))
    return points


def _font(size: float, *, bold: bool = False) -> Font:
    from PIL import ImageFont

    try:
        return ImageFont.truetype("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default(size)


def _fit(text: str, font: Font, width: float) -> str:
    """`text`, shortened with an ellipsis until it is at most `width` pixels wide in `font`."""
    while len(text) > 1 and font.getlength(text) > width:
        text = text.rstrip("…")[:-1] + "…"
    return text


def _arrowhead(curve: tuple[Point, Point, Point, Point], k: float) -> list[Point]:
    """The triangle at the curve's end, pointing along its last tangent, scaled by `k`."""
    tip = curve[3]
    # The end tangent runs from the last control point that differs from the end (as SVG's marker orientation).
    before = next((p for p in (curve[2], curve[1], curve[0]) if p != tip), curve[0])
    dx, dy = tip[0] - before[0], tip[1] - before[1]
    length = (dx * dx + dy * dy) ** 0.5 or 1.0
    ux, uy = dx / length, dy / length
    bx, by = tip[0] - ux * _ARROW, tip[1] - uy * _ARROW
    half = _ARROW / 2
    corners = [tip, (bx - uy * half, by + ux * half), (bx + uy * half, by - ux * half)]
    return [(x * k, y * k) for x, y in corners]


def _paint_edge(draw: ImageDraw.ImageDraw, shape: EdgeShape, k: float) -> None:
    points = [(x * k, y * k) for x, y in bezier_points(shape.curve)]
    draw.line(points, fill=shape.colour, width=max(1, round(_STROKE * k)), joint="curve")
    draw.polygon(_arrowhead(shape.curve, k), fill=shape.colour)


def _paint_label(draw: ImageDraw.ImageDraw, shape: EdgeShape, k: float, font: Font) -> None:
    lx, ly = shape.label_at
    draw.text((lx * k, ly * k), shape.label, font=font, fill=shape.colour, anchor="ms",
              stroke_width=max(1, round(_LABEL_HALO * k)), stroke_fill="#ffffff")


def render_png(edges: Sequence[Edge], *, title: str = "service graph", scale: float = 2.0) -> bytes:
    """The graph as PNG bytes, `scale` pixels per SVG unit (2: sharp on high-density screens and in print)."""
    try:
        from PIL import Image, ImageDraw
        from PIL.PngImagePlugin import PngInfo
    except ImportError as exc:
        raise MeshtraceError("a PNG picture needs Pillow: pip install 'meshtrace[png]' (an SVG needs nothing: "
                             "use --svg)") from exc
    layout = layout_graph(edges, title=title)
    k = scale * _SUPERSAMPLE
    size = (round(layout.width * scale), round(layout.height * scale))
    image = Image.new("RGB", (size[0] * _SUPERSAMPLE, size[1] * _SUPERSAMPLE), "#ffffff")
    draw = ImageDraw.Draw(image)
    label_font, node_font = _font(12 * k), _font(13 * k)
    draw.text((layout.title_at[0] * k, layout.title_at[1] * k), title, font=_font(15 * k, bold=True),
              fill=TITLE_TEXT, anchor="ls")
    for shape in layout.edges:
        _paint_edge(draw, shape, k)
    for shape in layout.edges:  # after every curve, so none is drawn across a label
        _paint_label(draw, shape, k, label_font)
    for node in layout.nodes:
        draw.rounded_rectangle((node.x * k, node.y * k, (node.x + node.width) * k, (node.y + node.height) * k),
                               radius=8 * k, fill=node.fill, outline=NODE_STROKE,
                               width=max(1, round(_NODE_STROKE * k)))
        cx, cy = node.centre
        # The layout shortens names by characters for the SVG's narrower fonts; here the width can be measured.
        label = _fit(node.label, node_font, (node.width - 10) * k)
        draw.text((cx * k, (cy + 4) * k), label, font=node_font, fill=NODE_TEXT, anchor="ms")
    info = PngInfo()
    info.add_text("Title", title)
    out = io.BytesIO()
    image.resize(size, Image.Resampling.LANCZOS).save(out, "PNG", pnginfo=info)
    return out.getvalue()
