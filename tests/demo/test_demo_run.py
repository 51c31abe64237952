"""`meshtrace demo --short` end to end: the Bookinfo mesh into a real Jaeger, and into a file without one.

Checked: the output a user reads (progress, waterfalls, graph, per-edge table), the traces in Jaeger (every
service, the full depth), the reviews split and the faults (as error spans and in the metrics), exactly the
expected graph edges, and that no process the demo started is left running.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from demo_support import EXPECTED_EDGES, MESHTRACE, run_demo, survivors
from PIL import Image

from meshtrace.views.model import Trace, traces_from_jaeger

import jaeger_process

REQUESTS = 120
SPLIT = {"v1": 0.2, "v2": 0.4, "v3": 0.4}
# The sidecars' split draws, seeded: every run picks the same sequence of reviews versions (with seed 3 every prefix
# of 90 to 140 picks is within 0.03 of SPLIT), so the proportion check below cannot fail on an unlucky draw.
SPLIT_SEED = "3"
# v2/v3: sidecar -> productpage -> client -> sidecar -> reviews' sidecar -> reviews -> client -> sidecar
#        -> ratings' sidecar -> ratings -> httpx client -> sidecar -> details' sidecar -> details
FULL_DEPTH = 14


@pytest.fixture(scope="module")
def jaeger_run(jaeger: jaeger_process.Jaeger,
               tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any], list[Trace]]:
    tmp = tmp_path_factory.mktemp("demo-jaeger")
    done, summary = run_demo(tmp, "--jaeger", jaeger.query_url, "--otlp", jaeger.otlp_endpoint,
                             "--requests", str(REQUESTS), "--seed", SPLIT_SEED)
    # The session's Jaeger also holds other tests' traces (a `productpage` sidecar among them): keep the demo's.
    traces = [t for t in traces_from_jaeger(jaeger.traces("productpage-sidecar", limit=1000))
              if any(s.attributes.get("service.namespace") == "bookinfo" for s in t.spans)]
    return done.stdout, summary, traces


@pytest.mark.jaeger
def test_output_shows_traffic_waterfalls_graph_and_edges(jaeger_run: tuple[str, dict[str, Any], list[Trace]]) -> None:
    out, summary, _ = jaeger_run
    assert summary["sent"] == REQUESTS
    assert summary["statuses"] == {"200": REQUESTS}          # productpage degrades instead of failing
    for heading in ("── requests", "── traces (2 of", "── service graph", "── per workload"):
        assert heading in out
    assert out.count("\ntrace ") == 2
    assert "✗ " in out                                       # the failing trace is among those shown
    assert "  unknown\n  └─► productpage\n      ├─► details\n      └─► reviews\n" in out
    assert "\x1b[" not in out


@pytest.mark.jaeger
def test_traces_in_jaeger_cover_every_service_at_full_depth(
        jaeger_run: tuple[str, dict[str, Any], list[Trace]]) -> None:
    _, summary, traces = jaeger_run
    assert len(traces) == REQUESTS
    services = {service for trace in traces for service in trace.services}
    assert services == {f"{app}{suffix}" for app in ("productpage", "details", "reviews", "ratings")
                        for suffix in ("", "-sidecar")}
    clean = [t for t in traces if not t.errors]
    assert max(t.depth for t in clean) == FULL_DEPTH
    assert set(summary["trace_ids"]) <= {t.trace_id for t in traces}


@pytest.mark.jaeger
def test_split_and_faults(jaeger_run: tuple[str, dict[str, Any], list[Trace]]) -> None:
    _, summary, traces = jaeger_run
    versions = Counter(summary["versions"])
    total = sum(versions.values())
    # A page whose reviews call failed (a fault further down) cannot say which version answered.
    assert total + summary["degraded"] == REQUESTS
    wanted = SPLIT if summary["rules"] else dict.fromkeys(SPLIT, 1 / 3)
    for version, share in wanted.items():
        assert abs(versions[version] / total - share) < 0.15, (versions, wanted)
    failing = [t for t in traces if t.errors]
    assert failing, "the faults left no error span"
    # The failure starts where ratings is called: an error span of reviews' sidecar or of ratings itself.
    starts = {s.service for t in failing for s in t.spans if s.error}
    assert starts & {"reviews-sidecar", "ratings", "ratings-sidecar"}
    errors_out_of_reviews = sum(e[3] for e in summary["edges"] if e[0] == "reviews")
    assert errors_out_of_reviews > 0
    assert summary["degraded"] > 0


@pytest.mark.jaeger
def test_graph_has_exactly_the_expected_edges(jaeger_run: tuple[str, dict[str, Any], list[Trace]]) -> None:
    _, summary, _ = jaeger_run
    # Fault aborts answered by the caller's sidecar count against the faulted service, so no address shows up.
    assert {(src, dst) for src, dst, *_ in summary["edges"]} == EXPECTED_EDGES
    workloads = {(src, dst) for src, dst, *_ in summary["workload_edges"]}
    assert {("productpage-v1", f"reviews-{v}") for v in SPLIT} <= workloads
    assert ("reviews-v1", "ratings-v1") not in workloads


@pytest.mark.jaeger
def test_nothing_left_running_after_the_jaeger_run(jaeger_run: tuple[str, dict[str, Any], list[Trace]]) -> None:
    _, summary, _ = jaeger_run
    assert len(summary["pids"]) == 12
    assert survivors(summary) == []


def test_without_jaeger_the_file_exporter_feeds_the_views(tmp_path: Path) -> None:
    done, summary = run_demo(tmp_path, "--no-jaeger", "--requests", "30")
    assert "tracing to the file exporter" in done.stdout
    assert summary["jaeger"] is None
    assert len(summary["pids"]) == 12
    assert survivors(summary) == []
    assert done.stdout.count("\ntrace ") == 2
    work = Path(summary["workdir"])
    assert f"graph picture: {work / 'graph.svg'} and graph.png\n" in done.stdout
    with Image.open(work / "graph.png") as picture:
        assert picture.format == "PNG"
        assert picture.info["Title"] == "bookinfo service graph"
    shown = subprocess.run([MESHTRACE, "traces", "--file", summary["spans_file"], "--trace-id",
                            summary["trace_ids"][0], "--width", "120"], capture_output=True, text=True, check=True,
                           cwd=tmp_path)
    assert shown.stdout.startswith(f"trace {summary['trace_ids'][0]}  ")
    assert shown.stdout.strip() in done.stdout
