"""Spans exported through `otlp` and `zipkin` arrive in a real Jaeger v2 with services, names and CHILD_OF refs.

Each scenario runs in a fresh interpreter (the global TracerProvider can be set once per process), in a temp
directory so the repository's `meshtrace/` folder cannot shadow the installed package.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Protocol

import pytest

pytestmark = pytest.mark.jaeger



class Jaeger(Protocol):
    """What these tests use of the `jaeger` fixture (tests/jaeger_process.py), without importing it: that module
    sits outside this folder, so a type check of tests/e2e alone could not resolve it."""

    @property
    def otlp_endpoint(self) -> str: ...

    @property
    def zipkin_endpoint(self) -> str: ...

    def wait_for_trace(self, trace_id: str, min_spans: int = 1, timeout: float = 20.0) -> dict[str, Any]: ...


SCENARIO = """
    import json, os, sys
    from opentelemetry.trace import SpanKind
    import meshtrace

    meshtrace.configure(**json.loads(sys.argv[1]))
    tracer = meshtrace.get_tracer("e2e.export")
    with tracer.start_as_current_span("GET /orders/{id}", kind=SpanKind.SERVER,
                                      attributes={"http.route": "/orders/{id}"}) as parent:
        with tracer.start_as_current_span("SELECT orders", attributes={"db.system": "postgresql"}):
            pass
        with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT,
                                          attributes={"http.request.method": "GET"}) as client:
            client.set_attribute("http.response.status_code", 200)
    meshtrace.shutdown()
    print(json.dumps({"trace_id": format(parent.get_span_context().trace_id, "032x"),
                      "span_id": format(parent.get_span_context().span_id, "016x"),
                      "stats": meshtrace.stats()}))
"""


def run_scenario(tmp_path: Path, code: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MESHTRACE_"))}
    clean.update(env or {})
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=tmp_path, env=clean,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def check_trace(trace: dict[str, Any], service: str, root_span_id: str) -> None:
    """The three spans of SCENARIO, under `service`, children pointing at the root with CHILD_OF."""
    spans = {span["operationName"]: span for span in trace["spans"]}
    assert set(spans) == {"GET /orders/{id}", "SELECT orders", "GET"}
    root = spans["GET /orders/{id}"]
    assert root["spanID"] == root_span_id
    assert root["references"] == []
    for name in ("SELECT orders", "GET"):
        assert spans[name]["references"] == [
            {"refType": "CHILD_OF", "traceID": trace["traceID"], "spanID": root_span_id}]
    for span in spans.values():
        assert trace["processes"][span["processID"]]["serviceName"] == service
    tags = {name: {tag["key"]: tag["value"] for tag in span["tags"]} for name, span in spans.items()}
    assert tags["GET /orders/{id}"]["span.kind"] == "server"
    assert tags["GET"]["span.kind"] == "client"
    assert tags["GET"]["http.response.status_code"] in (200, "200")
    assert tags["SELECT orders"]["db.system"] == "postgresql"


def test_otlp_export_arrives_in_jaeger(jaeger: Jaeger, tmp_path: Path) -> None:
    args = {"service_name": "e2e-otlp", "exporter": "otlp", "endpoint": jaeger.otlp_endpoint}
    result = run_scenario(tmp_path, SCENARIO, json.dumps(args))
    assert result["stats"]["spans_exported"] == 3
    trace = jaeger.wait_for_trace(result["trace_id"], min_spans=3)
    check_trace(trace, "e2e-otlp", result["span_id"])


def test_otlp_export_from_environment_only(jaeger: Jaeger, tmp_path: Path) -> None:
    env = {"OTEL_SERVICE_NAME": "e2e-otlp-env", "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_endpoint,
           # export must bypass the proxy the app's own traffic uses
           "HTTP_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    result = run_scenario(tmp_path, SCENARIO, "{}", env=env)
    check_trace(jaeger.wait_for_trace(result["trace_id"], min_spans=3), "e2e-otlp-env", result["span_id"])


def test_zipkin_export_arrives_in_jaeger(jaeger: Jaeger, tmp_path: Path) -> None:
    args = {"service_name": "e2e-zipkin", "exporter": "zipkin", "endpoint": jaeger.zipkin_endpoint}
    result = run_scenario(tmp_path, SCENARIO, json.dumps(args), env={"HTTP_PROXY": "http://127.0.0.1:9"})
    assert result["stats"]["spans_exported"] == 3
    trace = jaeger.wait_for_trace(result["trace_id"], min_spans=3)
    check_trace(trace, "e2e-zipkin", result["span_id"])


def test_zipkin_endpoint_from_environment(jaeger: Jaeger, tmp_path: Path) -> None:
    env = {"OTEL_SERVICE_NAME": "e2e-zipkin-env", "MESHTRACE_EXPORTER": "zipkin",
           "OTEL_EXPORTER_ZIPKIN_ENDPOINT": jaeger.zipkin_endpoint}
    result = run_scenario(tmp_path, SCENARIO, "{}", env=env)
    check_trace(jaeger.wait_for_trace(result["trace_id"], min_spans=3), "e2e-zipkin-env", result["span_id"])


def test_two_services_through_headers_make_one_trace(jaeger: Jaeger, tmp_path: Path) -> None:
    """A caller exporting by OTLP and a callee exporting by Zipkin, joined by injected headers."""
    caller = run_scenario(tmp_path, """
        import json, sys, meshtrace
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind
        meshtrace.configure("e2e-caller", exporter="otlp", endpoint=sys.argv[1])
        with meshtrace.get_tracer("t").start_as_current_span("call callee", kind=SpanKind.CLIENT) as span:
            headers = {}
            propagate.inject(headers)
        meshtrace.shutdown()
        print(json.dumps({"headers": headers, "trace_id": format(span.get_span_context().trace_id, "032x"),
                          "span_id": format(span.get_span_context().span_id, "016x")}))
    """, jaeger.otlp_endpoint)
    run_scenario(tmp_path, """
        import json, sys, meshtrace
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind
        meshtrace.configure("e2e-callee", exporter="zipkin", endpoint=sys.argv[1])
        context = propagate.extract(json.loads(sys.argv[2]))
        with meshtrace.get_tracer("t").start_as_current_span("handle", context=context, kind=SpanKind.SERVER):
            pass
        meshtrace.shutdown()
        print("{}")
    """, jaeger.zipkin_endpoint, json.dumps(caller["headers"]))
    trace = jaeger.wait_for_trace(caller["trace_id"], min_spans=2)
    spans = {span["operationName"]: span for span in trace["spans"]}
    assert trace["processes"][spans["call callee"]["processID"]]["serviceName"] == "e2e-caller"
    assert trace["processes"][spans["handle"]["processID"]]["serviceName"] == "e2e-callee"
    assert spans["handle"]["references"] == [
        {"refType": "CHILD_OF", "traceID": caller["trace_id"], "spanID": caller["span_id"]}]


FORMAT_HEADERS = {
    "tracecontext": {"traceparent"},
    "b3multi": {"x-b3-traceid", "x-b3-spanid", "x-b3-sampled"},
    "b3": {"b3"},
    "jaeger": {"uber-trace-id"},
    "ottrace": {"ot-tracer-traceid", "ot-tracer-spanid", "ot-tracer-sampled"},
}


@pytest.mark.parametrize("header_format", sorted(FORMAT_HEADERS))
def test_each_header_format_alone_keeps_one_trace(jaeger: Jaeger, tmp_path: Path, header_format: str) -> None:
    """A caller that speaks only one format still hands its trace to the next service, in Jaeger."""
    caller = run_scenario(tmp_path, """
        import json, sys, meshtrace
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind
        meshtrace.configure("fmt-caller-" + sys.argv[2], endpoint=sys.argv[1], propagators=[sys.argv[2]])
        with meshtrace.get_tracer("t").start_as_current_span("call", kind=SpanKind.CLIENT) as span:
            headers = {}
            propagate.inject(headers)
        meshtrace.shutdown()
        print(json.dumps({"headers": headers, "trace_id": format(span.get_span_context().trace_id, "032x"),
                          "span_id": format(span.get_span_context().span_id, "016x")}))
    """, jaeger.otlp_endpoint, header_format)
    trace_headers = {name for name in caller["headers"] if name != "x-request-id"}
    assert trace_headers == FORMAT_HEADERS[header_format]
    run_scenario(tmp_path, """
        import json, sys, meshtrace
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind
        meshtrace.configure("fmt-callee-" + sys.argv[3], endpoint=sys.argv[1])
        context = propagate.extract(json.loads(sys.argv[2]))
        with meshtrace.get_tracer("t").start_as_current_span("handle", context=context, kind=SpanKind.SERVER):
            pass
        meshtrace.shutdown()
        print("{}")
    """, jaeger.otlp_endpoint, json.dumps(caller["headers"]), header_format)
    trace = jaeger.wait_for_trace(caller["trace_id"], min_spans=2)
    spans = {span["operationName"]: span for span in trace["spans"]}
    assert trace["processes"][spans["handle"]["processID"]]["serviceName"] == f"fmt-callee-{header_format}"
    assert spans["handle"]["references"] == [
        {"refType": "CHILD_OF", "traceID": caller["trace_id"], "spanID": caller["span_id"]}]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_workers_export_over_otlp(jaeger: Jaeger, tmp_path: Path) -> None:
    """Pre-fork: the parent configures and exports first (a pooled connection exists), then workers fork."""
    result = run_scenario(tmp_path, """
        import json, os, sys, meshtrace
        meshtrace.configure("e2e-prefork", exporter="otlp", endpoint=sys.argv[1])
        tracer = meshtrace.get_tracer("t")
        tracer.start_span("master").end()
        from opentelemetry import trace
        trace.get_tracer_provider().force_flush()  # the parent now holds a keep-alive connection to Jaeger
        traces, children = [], []
        for worker in range(3):
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read_end)
                with tracer.start_as_current_span(f"worker-{worker}") as span:
                    with tracer.start_as_current_span("work"):
                        pass
                os.write(write_end, format(span.get_span_context().trace_id, "032x").encode())
                sys.exit(0)
            os.close(write_end)
            children.append(pid)
            with os.fdopen(read_end) as pipe:
                traces.append(pipe.read())
        codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
        meshtrace.shutdown()
        print(json.dumps({"traces": traces, "codes": codes}))
    """, jaeger.otlp_endpoint)
    assert result["codes"] == [0, 0, 0]
    for worker, trace_id in enumerate(result["traces"]):
        trace = jaeger.wait_for_trace(trace_id, min_spans=2)
        assert {span["operationName"] for span in trace["spans"]} == {f"worker-{worker}", "work"}
        assert {process["serviceName"] for process in trace["processes"].values()} == {"e2e-prefork"}
