"""The demo's graph pictures: graph.svg and graph.png side by side, or the SVG alone (and how to get the PNG)
when Pillow is not installed, without failing the demo."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PIL import Image

from meshtrace.demo.cli import write_pictures
from meshtrace.views.graph import Edge

EDGES = [Edge("unknown", "productpage", 30, 0, 1.0), Edge("productpage", "reviews", 30, 3, 1.0)]


def test_svg_and_png_side_by_side(tmp_path: Path) -> None:
    said = write_pictures(EDGES, tmp_path)
    assert said == f"{tmp_path / 'graph.svg'} and graph.png"
    assert (tmp_path / "graph.svg").read_text().startswith("<svg ")
    with Image.open(tmp_path / "graph.png") as png:
        assert png.info["Title"] == "bookinfo service graph"


def test_without_pillow_the_svg_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "PIL" or m.startswith("PIL.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "PIL", None)      # `import PIL` now raises ImportError
    said = write_pictures(EDGES, tmp_path)
    assert said == f"{tmp_path / 'graph.svg'} (pip install 'meshtrace[png]' for a PNG too)"
    assert (tmp_path / "graph.svg").is_file()
    assert not (tmp_path / "graph.png").exists()
