"""Terminal, SVG and PNG views of traces and of the service graph, for people rather than dashboards."""

from meshtrace.views.graph import Edge, render_graph_text
from meshtrace.views.graph_png import render_png
from meshtrace.views.graph_svg import render_svg
from meshtrace.views.model import Span, Trace, traces_from_jaeger, traces_from_otlp_lines
from meshtrace.views.waterfall import render_waterfall

__all__ = [
    "Edge",
    "Span",
    "Trace",
    "render_graph_text",
    "render_png",
    "render_svg",
    "render_waterfall",
    "traces_from_jaeger",
    "traces_from_otlp_lines",
]
