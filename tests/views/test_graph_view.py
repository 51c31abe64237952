"""The service graph from Istio metrics text: which series count, quantiles, the text view and the SVG picture."""

from __future__ import annotations

import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from meshtrace.views.graph import Edge, edges_from_dependencies, edges_from_samples, render_graph_text
from meshtrace.views.graph_svg import render_svg
from meshtrace.views.promtext import delta, parse_samples

MESHTRACE = str(Path(sys.executable).parent / "meshtrace")

_ID = ('source_workload="{sw}",source_app="{sa}",destination_workload="{dw}",destination_app="{da}",'
       'destination_service="{ds}",destination_service_name="{dn}"')


def series(reporter: str, src: str, dst: str, code: int, count: int, *, flags: str = "-",
           buckets: dict[str, int] | None = None) -> str:
    sw = f"{src}-v1" if src != "unknown" else "unknown"
    dw = f"{dst}-v1" if dst != "unknown" else "unknown"
    ident = _ID.format(sw=sw, sa=src, dw=dw, da=dst, ds=dst if dst != "unknown" else "ratings",
                       dn=dst if dst != "unknown" else "ratings")
    labels = f'reporter="{reporter}",{ident},response_code="{code}",response_flags="{flags}"'
    lines = [f"istio_requests_total{{{labels}}} {count}"]
    for le, n in (buckets or {}).items():
        lines.append(f'istio_request_duration_milliseconds_bucket{{{labels},le="{le}"}} {n}')
    return "\n".join(lines)


METRICS = "\n".join([
    "# HELP istio_requests_total Total requests.",
    "# TYPE istio_requests_total counter",
    # the front end, called by a client without a sidecar: only its own (destination) sidecar reports it
    series("destination", "unknown", "front", 200, 100, buckets={"10": 50, "100": 100, "+Inf": 100}),
    # front -> back, reported on both sides: counted once, from the caller's side
    series("source", "front", "back", 200, 90, buckets={"10": 90, "1000": 90, "+Inf": 90}),
    series("source", "front", "back", 503, 10, buckets={"10": 0, "1000": 10, "+Inf": 10}),
    series("destination", "front", "back", 200, 90),
    # an abort injected by front's sidecar never reached a destination: destination unknown, service known
    series("source", "front", "unknown", 503, 5, flags="FI"),
])


def test_each_request_is_counted_once_with_errors() -> None:
    edges = {(e.source, e.destination): e for e in edges_from_samples(parse_samples(METRICS), seconds=10)}
    assert set(edges) == {("unknown", "front"), ("front", "back"), ("front", "ratings")}
    back = edges[("front", "back")]
    assert (back.requests, back.errors) == (100, 10)
    assert back.error_rate == pytest.approx(0.1)
    assert back.rate == pytest.approx(10.0)
    assert edges[("front", "ratings")].errors == 5


def test_quantiles_interpolate_like_prometheus() -> None:
    edge = Edge("a", "b", buckets={10.0: 50, 100.0: 100, float("inf"): 100})
    assert edge.quantile(0.5) == pytest.approx(10.0)
    assert edge.quantile(0.75) == pytest.approx(55.0)
    assert edge.quantile(0.99) == pytest.approx(98.2)
    assert Edge("a", "b").quantile(0.5) is None


def test_by_workload_names_versions() -> None:
    names = {(e.source, e.destination) for e in edges_from_samples(parse_samples(METRICS), by="workload")}
    assert ("front-v1", "back-v1") in names


def test_delta_subtracts_counters() -> None:
    before = list(parse_samples('istio_requests_total{a="1"} 5\nistio_requests_total{a="2"} 7'))
    after = list(parse_samples('istio_requests_total{a="1"} 12\nistio_requests_total{a="3"} 2'))
    assert [s.value for s in delta(after, before)] == [7, 2]


def test_parse_skips_comments_and_unescapes_labels() -> None:
    [sample] = parse_samples('# TYPE x counter\nx{path="a\\"b\\\\c",le="+Inf"} 3\nbroken{ 4\n')
    assert sample.label("path") == 'a"b\\c'
    assert sample.value == 3


def test_text_view_shows_tree_and_numbers() -> None:
    text = render_graph_text(edges_from_samples(parse_samples(METRICS), seconds=10), width=100)
    assert text.splitlines()[:5] == [
        "service graph", "  unknown", "  └─► front", "      ├─► back", "      └─► ratings"]
    row = next(line for line in text.splitlines() if line.startswith("  front") and "─► back" in line)
    assert row.split()[3:] == ["100", "10.0", "10.0%", "5.6ms", "901ms"]


def test_svg_is_well_formed_with_one_path_per_edge() -> None:
    edges = edges_from_samples(parse_samples(METRICS), seconds=10)
    root = ET.fromstring(render_svg(edges))
    ns = {"svg": "http://www.w3.org/2000/svg"}
    paths = {(p.get("data-source"), p.get("data-destination")) for p in root.iterfind(".//svg:path[@class='edge']", ns)}
    assert paths == {("unknown", "front"), ("front", "back"), ("front", "ratings")}
    nodes = {g.get("data-name") for g in root.iterfind(".//svg:g[@class='node']", ns)}
    assert nodes == {"unknown", "front", "back", "ratings"}
    labels = [t.text for t in root.iterfind(".//svg:text", ns)]
    assert "10.0 rps · 10.0% err" in labels


def test_jaeger_dependencies_fold_sidecars() -> None:
    data = [{"parent": "front-sidecar", "child": "front", "callCount": 9},
            {"parent": "front", "child": "front-sidecar", "callCount": 9},
            {"parent": "front-sidecar", "child": "back-sidecar", "callCount": 9}]
    assert [(e.source, e.destination, e.requests) for e in edges_from_dependencies(data)] == [("front", "back", 9)]


@pytest.fixture
def metrics_server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = METRICS.encode()
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_graph_command_scrapes_and_writes_svg_and_png(metrics_server: str, tmp_path: Path) -> None:
    svg, png = tmp_path / "graph.svg", tmp_path / "graph.png"
    out = subprocess.run([MESHTRACE, "graph", "--metrics", metrics_server, "--svg", str(svg), "--png", str(png),
                          "--width", "100"], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert "  └─► front" in out.stdout
    assert "\x1b[" not in out.stdout                       # not a terminal: no colour
    assert out.stdout.endswith(f"\n\nwrote {svg}\nwrote {png}\n")
    root = ET.fromstring(svg.read_text())
    assert root.tag.endswith("svg")
    with Image.open(png) as picture:                        # the same drawing, two pixels per SVG unit
        assert picture.format == "PNG"
        assert picture.size == (int(root.get("width", "0")) * 2, int(root.get("height", "0")) * 2)


def _cubic_points(d: str, steps: int = 50) -> list[tuple[float, float]]:
    nums = [float(n) for n in d.replace("M", " ").replace("C", " ").replace(",", " ").split()]
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = zip(nums[0::2], nums[1::2], strict=True)
    out = []
    for i in range(steps + 1):
        t = i / steps
        a, b, c, e = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t * t, t ** 3
        out.append((a * x0 + b * x1 + c * x2 + e * x3, a * y0 + b * y1 + c * y2 + e * y3))
    return out


BOOKINFO_APPS = [
    Edge("unknown", "productpage", 9), Edge("productpage", "details", 9), Edge("productpage", "reviews", 9),
    Edge("reviews", "ratings", 9), Edge("reviews", "127.0.0.1", 9, 9), Edge("ratings", "details", 9)]
# Tall columns (three reviews versions), an arc over them, and a call back up the graph (a cycle).
WORKLOADS_WITH_CYCLE = [
    Edge("unknown", "productpage-v1", 9), Edge("productpage-v1", "details-v1", 9),
    *(Edge("productpage-v1", f"reviews-{v}", 3) for v in ("v1", "v2", "v3")),
    *(Edge(f"reviews-{v}", "ratings-v1", 3) for v in ("v2", "v3")), Edge("ratings-v1", "details-v1", 6),
    Edge("details-v1", "productpage-v1", 1, 1)]


@pytest.mark.parametrize("edges", [BOOKINFO_APPS, WORKLOADS_WITH_CYCLE], ids=["apps", "workloads-with-cycle"])
def test_svg_edges_never_run_through_a_node(edges: list[Edge]) -> None:
    root = ET.fromstring(render_svg(edges))
    ns = {"svg": "http://www.w3.org/2000/svg"}
    boxes = {}
    for group in root.iterfind(".//svg:g[@class='node']", ns):
        rect = group.find("svg:rect", ns)
        assert rect is not None
        x, y, w, h = (float(rect.get(k, "0")) for k in ("x", "y", "width", "height"))
        boxes[group.get("data-name")] = (x, y, x + w, y + h)
    width, height = float(root.get("width", "0")), float(root.get("height", "0"))
    for x0, y0, x1, y1 in boxes.values():
        assert 0 < x0 < x1 < width
        assert 0 < y0 < y1 < height
    for path in root.iterfind(".//svg:path[@class='edge']", ns):
        ends = {path.get("data-source"), path.get("data-destination")}
        for px, py in _cubic_points(path.get("d", "")):
            assert 0 <= px <= width
            assert 0 <= py <= height
            for name, (x0, y0, x1, y1) in boxes.items():
                if name not in ends:
                    assert not (x0 < px < x1 and y0 < py < y1), (ends, name, (px, py))
