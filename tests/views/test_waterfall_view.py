"""Waterfalls from a known trace: the file exporter's OTLP/JSON read back, tree order, bars, error marks, width."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from views_support import EXPECTED_WATERFALL, TRACE_ID, otlp_lines

from meshtrace.views.model import traces_from_otlp_lines
from meshtrace.views.style import Style
from meshtrace.views.waterfall import render_waterfall

MESHTRACE = str(Path(sys.executable).parent / "meshtrace")


def test_otlp_lines_make_one_trace_with_parents_services_and_errors() -> None:
    [trace] = traces_from_otlp_lines([*otlp_lines(), "", "{half a line"])
    assert trace.trace_id == TRACE_ID
    assert trace.services == ["cart", "frontend", "payment"]
    assert trace.duration_us == 100_000
    assert trace.depth == 3
    assert [(depth, span.service, span.name) for depth, span in trace.tree()] == [
        (0, "frontend", "GET /checkout"), (1, "frontend", "GET"), (2, "cart", "GET /cart/<id>"),
        (1, "frontend", "GET"), (2, "payment", "POST /pay")]
    assert [span.error for _, span in trace.tree()] == [False, False, False, True, True]


def test_waterfall_matches_the_known_rendering() -> None:
    [trace] = traces_from_otlp_lines(otlp_lines())
    assert render_waterfall(trace, width=90) == EXPECTED_WATERFALL


def test_every_line_fits_the_width_and_long_names_are_cut() -> None:
    [trace] = traces_from_otlp_lines(line.replace("POST /pay", "POST /" + "x" * 200) for line in otlp_lines())
    for width in (60, 80, 133):
        lines = render_waterfall(trace, width=width).splitlines()
        assert max(len(line) for line in lines) <= width
        assert any("…" in line for line in lines)


def test_colour_only_when_asked() -> None:
    [trace] = traces_from_otlp_lines(otlp_lines())
    plain = render_waterfall(trace, width=90)
    coloured = render_waterfall(trace, width=90, style=Style(True))
    assert "\x1b[" not in plain
    assert "\x1b[31m✗ \x1b[0m" in coloured          # error marks in red
    assert "▒" not in coloured                       # colour replaces the hatched error bar


def test_orphan_spans_show_as_roots() -> None:
    [trace] = traces_from_otlp_lines(otlp_lines()[1:])   # the frontend's batch never arrived
    assert [(d, s.service) for d, s in trace.tree()] == [(0, "cart"), (0, "payment")]


def test_traces_command_reads_a_file(tmp_path: Path) -> None:
    spans = tmp_path / "spans.jsonl"
    spans.write_text("\n".join(otlp_lines()) + "\n")
    out = subprocess.run([MESHTRACE, "traces", "--file", str(spans), "--width", "90"], capture_output=True,
                         text=True, check=True, cwd=tmp_path)
    assert out.stdout.rstrip("\n") == EXPECTED_WATERFALL
    by_id = subprocess.run([MESHTRACE, "traces", "--file", str(spans), "--trace-id", "0" * 32], capture_output=True,
                           text=True, check=False, cwd=tmp_path)
    assert by_id.returncode == 1
    assert "no traces found" in by_id.stderr
