"""configure()/shutdown()/stats() end to end, each scenario in a fresh interpreter (one global provider per process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest


def run(code: str, cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `code` in a new interpreter in `cwd` (never the repo root, whose meshtrace/ would shadow the install)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MESHTRACE_"))}
    clean.update(env or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=clean, capture_output=True,
                          text=True, timeout=timeout, check=False)


def run_ok(code: str, cwd: Path, env: dict[str, str] | None = None) -> Any:
    """Run, require success, and return the JSON printed on the last stdout line."""
    done = run(code, cwd, env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def file_spans(path: Path) -> list[dict[str, Any]]:
    spans = []
    for line in path.read_text().splitlines():
        for resource_spans in json.loads(line)["resourceSpans"]:
            resource = {a["key"]: a["value"].get("stringValue") for a in resource_spans["resource"]["attributes"]}
            for scope_spans in resource_spans["scopeSpans"]:
                for span in scope_spans["spans"]:
                    span["resource"] = resource
                    spans.append(span)
    return spans


def test_env_configuration_exports_to_file_at_exit(tmp_path: Path) -> None:
    env = {"OTEL_SERVICE_NAME": "orders", "MESHTRACE_EXPORTER": "file", "MESHTRACE_FILE": "out.jsonl",
           "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test,team=a%2Cb"}
    run_ok("""
        import json, meshtrace
        provider = meshtrace.configure()
        tracer = meshtrace.get_tracer("app")
        with tracer.start_as_current_span("parent"):
            with tracer.start_as_current_span("child"):
                pass
        print(json.dumps(type(provider).__module__))
        # no shutdown(): the atexit hook must flush
    """, tmp_path, env)
    spans = {span["name"]: span for span in file_spans(tmp_path / "out.jsonl")}
    assert spans["child"]["parentSpanId"] == spans["parent"]["spanId"]
    resource = spans["parent"]["resource"]
    assert resource["service.name"] == "orders"
    assert resource["deployment.environment"] == "test"
    assert resource["team"] == "a,b"
    assert resource["telemetry.distro.name"] == "meshtrace"


def test_arguments_win_and_a_second_call_is_harmless(tmp_path: Path) -> None:
    result = run_ok("""
        import json, logging, meshtrace
        from opentelemetry import trace
        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logging.getLogger("meshtrace").addHandler(handler)
        logging.getLogger("meshtrace").setLevel(logging.DEBUG)
        first = meshtrace.configure("arg-service", exporter="file", endpoint="args.jsonl")
        same = meshtrace.configure("arg-service", exporter="file", endpoint="args.jsonl")
        records.clear()
        other = meshtrace.configure("different", exporter="console")
        try:
            meshtrace.configure(exporter="otpl")
            error = None
        except meshtrace.ConfigError as exc:
            error = str(exc)
        meshtrace.get_tracer("t").start_span("one").end()
        meshtrace.shutdown()
        meshtrace.shutdown()  # idempotent
        print(json.dumps({"same": first is same is other is trace.get_tracer_provider(), "error": error,
                          "logged": [(r.levelname, r.getMessage()[:58]) for r in records]}))
    """, tmp_path, {"OTEL_SERVICE_NAME": "env-service", "MESHTRACE_EXPORTER": "console"})
    assert result["same"] is True
    assert result["error"] == ("exporter='otpl': unknown exporter; choose one of otlp, zipkin, console, file, "
                               "none")
    assert result["logged"] == [["DEBUG", "meshtrace.configure() called again with different settings"]]
    [span] = file_spans(tmp_path / "args.jsonl")
    assert span["resource"]["service.name"] == "arg-service"


def test_a_config_error_installs_nothing(tmp_path: Path) -> None:
    result = run_ok("""
        import json, meshtrace
        from opentelemetry import propagate, trace
        before = type(propagate.get_global_textmap()).__name__
        errors = []
        for kwargs in ({"sampler": "sometimes"}, {"propagators": ["b3", "zipkin"]}):
            try:
                meshtrace.configure("x", exporter="none", **kwargs)
            except meshtrace.ConfigError as exc:
                errors.append(str(exc))
        installed = type(trace.get_tracer_provider()).__name__, type(propagate.get_global_textmap()).__name__
        meshtrace.configure("x", exporter="none")
        after = type(trace.get_tracer_provider()).__name__, type(propagate.get_global_textmap()).__name__
        print(json.dumps({"errors": errors, "installed": installed, "before": before, "after": after}))
    """, tmp_path)
    assert result["errors"][0].startswith("sampler='sometimes': unknown sampler")
    assert result["errors"][1].startswith("propagators='b3,zipkin': unknown propagation format 'zipkin'")
    assert result["installed"] == ["ProxyTracerProvider", result["before"]]
    assert result["after"] == ["TracerProvider", "MeshPropagator"]


def test_propagators_from_the_environment_and_errors_naming_the_variable(tmp_path: Path) -> None:
    code = """
        import json, meshtrace
        try:
            meshtrace.configure("x", exporter="none")
            from opentelemetry import propagate  # after configure: OTel's import alone rejects unknown names
            print(json.dumps(list(propagate.get_global_textmap().formats)))
        except meshtrace.ConfigError as exc:
            print(json.dumps(str(exc)))
    """
    assert run_ok(code, tmp_path, {"OTEL_PROPAGATORS": "tracecontext,b3multi"}) == ["tracecontext", "b3multi"]
    assert run_ok(code, tmp_path, {"OTEL_PROPAGATORS": "tracecontext", "MESHTRACE_PROPAGATORS": "jaeger"}) == [
        "jaeger"]
    assert run_ok(code, tmp_path, {"OTEL_PROPAGATORS": "meshtrace"}) == [
        "tracecontext", "baggage", "b3multi", "b3", "jaeger", "ottrace"]
    assert run_ok(code, tmp_path, {"OTEL_PROPAGATORS": "none"}) == []
    message = run_ok(code, tmp_path, {"OTEL_PROPAGATORS": "tracecontext,xray"})
    assert message.startswith("OTEL_PROPAGATORS='tracecontext,xray': unknown propagation format 'xray'")


def test_incoming_decisions_in_headers_are_honoured(tmp_path: Path) -> None:
    result = run_ok("""
        import json, meshtrace
        from opentelemetry import propagate
        meshtrace.configure("x", exporter="none", sampler="always_off")
        tracer = meshtrace.get_tracer("t")
        def sampled(headers):
            span = tracer.start_span("server", context=propagate.extract(headers))
            span.end()
            return span.get_span_context().trace_flags.sampled
        print(json.dumps({
            "plain": sampled({}),
            "b3 debug": sampled({"b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d"}),
            "x-b3-flags": sampled({"X-B3-TraceId": "80f198ee56343ba864fe8b2a57d3eff7",
                                   "X-B3-SpanId": "e457b5a2e4d86bd1", "X-B3-Flags": "1"}),
        }))
        meshtrace.shutdown()
    """, tmp_path)
    assert result == {"plain": False, "b3 debug": True, "x-b3-flags": True}
    denied = run_ok("""
        import json, meshtrace
        from opentelemetry import propagate
        meshtrace.configure("x", exporter="none")  # parent-based always-on
        tracer = meshtrace.get_tracer("t")
        def sampled(headers):
            span = tracer.start_span("server", context=propagate.extract(headers))
            span.end()
            return span.get_span_context().trace_flags.sampled
        print(json.dumps([sampled({}), sampled({"b3": "0"}),
                          sampled({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"}),
                          sampled({"uber-trace-id": "0af7651916cd43dd8448eb211c80319c:b7ad6b7169203331:0:0"})]))
    """, tmp_path)
    assert denied == [True, False, False, False]


def test_none_exporter_makes_spans_but_exports_nothing(tmp_path: Path) -> None:
    result = run_ok("""
        import json, meshtrace
        meshtrace.configure("x", exporter="none")
        with meshtrace.get_tracer("t").start_as_current_span("s") as span:
            valid = span.get_span_context().is_valid
        meshtrace.shutdown()
        print(json.dumps({"valid": valid, "stats": meshtrace.stats()}))
    """, tmp_path)
    assert result == {"valid": True, "stats": {"spans_exported": 0, "spans_dropped": 0, "export_failures": 0,
                                               "spans_failed_export": 0}}


def test_console_exporter_prints_spans(tmp_path: Path) -> None:
    done = run("""
        import meshtrace
        meshtrace.configure("x", exporter="console")
        meshtrace.get_tracer("t").start_span("printed-span").end()
        meshtrace.shutdown()
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert '"name": "printed-span"' in done.stdout


def test_unreachable_backend_never_fails_the_app_and_is_logged_once(tmp_path: Path) -> None:
    done = run("""
        import json, logging, socket, meshtrace
        logging.basicConfig(level=logging.WARNING)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        meshtrace.configure("x", exporter="otlp", endpoint=f"http://127.0.0.1:{port}")
        tracer = meshtrace.get_tracer("t")
        for _ in range(1000):
            with tracer.start_as_current_span("s"):
                pass
        meshtrace.shutdown(timeout_s=10)
        print(json.dumps(meshtrace.stats()))
    """, tmp_path, {"OTEL_EXPORTER_OTLP_TIMEOUT": "0.5"})
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    assert stats["spans_exported"] == 0
    assert stats["export_failures"] >= 1
    assert stats["spans_failed_export"] + stats["spans_dropped"] == 1000
    warnings = [line for line in done.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert len(warnings) == 1, done.stderr
    assert "cannot export spans to otlp http://127.0.0.1:" in warnings[0]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_workers_keep_exporting(tmp_path: Path) -> None:
    """Pre-fork model (gunicorn): the parent configures, each child's spans are exported by the child."""
    result = run_ok("""
        import json, os, sys, meshtrace
        meshtrace.configure("prefork", exporter="file", endpoint="spans.jsonl")
        tracer = meshtrace.get_tracer("t")
        tracer.start_span("parent-before-fork").end()
        children = []
        for worker in range(3):
            pid = os.fork()
            if pid == 0:
                with tracer.start_as_current_span(f"request-in-worker-{worker}") as span:
                    span.set_attribute("worker.pid", os.getpid())
                    with tracer.start_as_current_span("db-call"):
                        pass
                sys.exit(0)  # a normal exit: the inherited atexit hook flushes the child's queue
            children.append(pid)
        codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
        meshtrace.shutdown()
        print(json.dumps({"codes": codes, "children": children}))
    """, tmp_path)
    assert result["codes"] == [0, 0, 0]
    spans = file_spans(tmp_path / "spans.jsonl")
    names = sorted(span["name"] for span in spans)
    assert names == sorted(["parent-before-fork", "db-call", "db-call", "db-call",
                            "request-in-worker-0", "request-in-worker-1", "request-in-worker-2"])
    pids = {int(a["value"]["intValue"]) for span in spans for a in span.get("attributes", ())
            if a["key"] == "worker.pid"}
    assert pids == set(result["children"])


def test_a_provider_installed_by_someone_else_is_kept(tmp_path: Path) -> None:
    done = run("""
        import json, logging, meshtrace
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        logging.basicConfig(level=logging.WARNING)
        theirs = TracerProvider()
        trace.set_tracer_provider(theirs)
        ours = meshtrace.configure("x", exporter="file", endpoint="never.jsonl")
        meshtrace.get_tracer("t").start_span("s").end()
        meshtrace.shutdown()
        from opentelemetry import propagate
        print(json.dumps([ours is theirs, type(propagate.get_global_textmap()).__name__]))
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [True, "MeshPropagator"]
    assert "an OpenTelemetry TracerProvider is already installed" in done.stderr
    assert not (tmp_path / "never.jsonl").exists()
