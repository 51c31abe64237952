"""The service graph as a PNG: it decodes, has the SVG's layout, paints every node, edge and label where the
layout puts them (failing edges in red), the numbers on an edge are drawn at that edge, and a missing Pillow is a
clear error rather than a traceback."""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image

from meshtrace.cli import main
from meshtrace.errors import MeshtraceError
from meshtrace.views import cli as views_cli
from meshtrace.views.graph import Edge
from meshtrace.views.graph_layout import GraphLayout, layout_graph
from meshtrace.views.graph_png import bezier_points, render_png

SECONDS = 10.0
BOOKINFO = [Edge("unknown", "productpage", 300, 0, SECONDS), Edge("productpage", "details", 300, 0, SECONDS),
            Edge("productpage", "reviews", 300, 17, SECONDS), Edge("reviews", "ratings", 235, 17, SECONDS),
            Edge("ratings", "details", 218, 0, SECONDS), Edge("details", "productpage", 4, 4, SECONDS)]
RGB = tuple[int, int, int]


def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image.convert("RGB")


def _hex(colour: str) -> RGB:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _near(a: Sequence[int], b: Sequence[int], tolerance: int = 24) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


def _pixel(image: Image.Image, x: float, y: float, scale: float) -> RGB:
    r, g, b = image.getpixel((round(x * scale), round(y * scale)))  # type: ignore[misc]
    return r, g, b


def _pixels(image: Image.Image) -> list[RGB]:
    data = image.convert("RGB").tobytes()
    return [(data[i], data[i + 1], data[i + 2]) for i in range(0, len(data), 3)]


def _reddish(rgb: RGB) -> bool:
    return rgb[0] > 120 and rgb[0] - max(rgb[1], rgb[2]) > 60


def _greyish(rgb: RGB) -> bool:
    return max(rgb) < 200 and max(rgb) - min(rgb) < 30


@pytest.fixture(scope="module")
def drawn() -> tuple[GraphLayout, Image.Image]:
    return layout_graph(BOOKINFO), _decode(render_png(BOOKINFO, scale=2))


def test_png_has_the_svg_layout_size_and_a_title(drawn: tuple[GraphLayout, Image.Image]) -> None:
    layout, image = drawn
    assert image.size == (layout.width * 2, layout.height * 2)
    assert Image.open(io.BytesIO(render_png(BOOKINFO, title="bookinfo"))).info["Title"] == "bookinfo"
    assert _decode(render_png(BOOKINFO, scale=1)).size == (layout.width, layout.height)


def test_every_node_box_is_filled_and_outlined(drawn: tuple[GraphLayout, Image.Image]) -> None:
    layout, image = drawn
    assert {n.name for n in layout.nodes} == {"unknown", "productpage", "details", "reviews", "ratings"}
    for node in layout.nodes:
        # Inside the box, left of the centred name: the fill; on the box's top edge: the blue outline.
        assert _near(_pixel(image, node.x + 6, node.y + node.height / 2, 2), _hex(node.fill)), node.name
        outline = _pixel(image, node.x + node.width / 2, node.y, 2)
        assert outline[2] > outline[0] + 60, (node.name, outline)
        # The name is written in the box: dark blue pixels around its centre.
        cx, cy = node.centre
        box = image.crop((round((cx - 40) * 2), round((cy - 8) * 2), round((cx + 40) * 2), round((cy + 6) * 2)))
        assert any(r < 80 and b > 120 for r, g, b in _pixels(box)), node.name


def test_every_edge_is_drawn_along_its_curve_in_its_colour(drawn: tuple[GraphLayout, Image.Image]) -> None:
    layout, image = drawn
    for shape in layout.edges:
        # A quarter of the way along the curve, clear of the label at its middle: the line, red when failing.
        hits = []
        for px, py in bezier_points(shape.curve)[8:16]:
            hood = image.crop((round(px * 2) - 2, round(py * 2) - 2, round(px * 2) + 3, round(py * 2) + 3))
            darkest = min(_pixels(hood), key=sum)
            hits.append(_reddish(darkest) if shape.failing else _greyish(darkest))
        assert all(hits), (shape.edge.source, shape.edge.destination, hits)


def test_picture_is_mostly_white_but_not_blank(drawn: tuple[GraphLayout, Image.Image]) -> None:
    _, image = drawn
    pixels = _pixels(image)
    painted = sum(1 for p in pixels if p != (255, 255, 255)) / len(pixels)
    assert 0.05 < painted < 0.6, painted


def _changed_box(a: bytes, b: bytes) -> tuple[int, int, int, int]:
    first, second = _decode(a), _decode(b)
    diff = Image.frombytes("L", first.size, bytes(
        0 if p == q else 255 for p, q in zip(_pixels(first), _pixels(second), strict=True)))
    box = diff.getbbox()
    assert box is not None, "the pictures are identical"
    return box


def test_an_edges_numbers_are_drawn_at_that_edge() -> None:
    layout = layout_graph(BOOKINFO)
    for index in (1, 2):
        changed = list(BOOKINFO)
        edge = changed[index]
        # Same requests and errors, a rate one digit shorter ("30.0 rps" to "0.8 rps"): only the label changes,
        # and all of it, since the shorter text is centred anew.
        changed[index] = Edge(edge.source, edge.destination, edge.requests, edge.errors, 400.0)
        left, top, right, bottom = _changed_box(render_png(BOOKINFO, scale=1), render_png(changed, scale=1))
        lx, ly = layout.edges[index].label_at
        assert abs((left + right) / 2 - lx) < 6, (lx, left, right)
        assert 80 < right - left < 160
        assert ly - 16 < top < bottom < ly + 6, (ly, top, bottom)
    # A changed error count colours the line and its arrowhead too: the changes reach the far end.
    changed = list(BOOKINFO)
    changed[1] = Edge("productpage", "details", 300, 30, SECONDS)
    left, _, right, _ = _changed_box(render_png(BOOKINFO, scale=1), render_png(changed, scale=1))
    (sx, _), *_, (dx, _) = layout.edges[1].curve
    assert left <= sx + 2
    assert right >= dx - 2


def test_an_empty_graph_is_a_picture_with_its_title() -> None:
    image = _decode(render_png([], title="nothing yet"))
    assert image.getbbox() is not None
    assert any(p != (255, 255, 255) for p in _pixels(image))


def test_without_pillow_the_png_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    for name in [m for m in sys.modules if m == "PIL" or m.startswith("PIL.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "PIL", None)      # `import PIL` now raises ImportError
    with pytest.raises(MeshtraceError, match=r"pip install 'meshtrace\[png\]'"):
        render_png(BOOKINFO)
    monkeypatch.setattr(views_cli, "load_edges", lambda **_: BOOKINFO)
    png, svg = tmp_path / "graph.png", tmp_path / "graph.svg"
    assert main(["graph", "--metrics", "127.0.0.1:9", "--svg", str(svg), "--png", str(png)]) == 2
    out, err = capsys.readouterr()
    assert "meshtrace: error: a PNG picture needs Pillow" in err
    assert out == ""                                  # it fails before printing half a result
    assert not png.exists()
    assert not svg.exists()
