"""`meshtrace-run` and `import meshtrace.auto`: zero-code set-up in fresh interpreters, any import order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

RUN = Path(sys.executable).parent / "meshtrace-run"

APP = textwrap.dedent("""
    from flask import Flask          # imported before anything meshtrace-related could run in user code
    import httpx

    app = Flask("auto")

    @app.get("/hello/<name>")
    def hello(name):
        transport = httpx.MockTransport(lambda request: httpx.Response(200, json=dict(request.headers)))
        with httpx.Client(transport=transport) as client:
            sent = client.get("http://downstream.local/x").json()
        return {"traceparent": sent.get("traceparent"), "request_id": sent.get("x-request-id")}

    body = app.test_client().get("/hello/bob", headers={"x-request-id": "rid-auto"}).get_json()
    print("BODY", body["traceparent"], body["request_id"])
""")


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("OTEL_", "MESHTRACE_")) and key != "PYTHONPATH"}
    env.update({"MESHTRACE_EXPORTER": "file", "MESHTRACE_FILE": str(tmp_path / "spans.jsonl"), **extra})
    return env


def spans_in(path: Path) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for line in path.read_text().splitlines():
        for resource in json.loads(line)["resourceSpans"]:
            service = next(attr["value"]["stringValue"] for attr in resource["resource"]["attributes"]
                           if attr["key"] == "service.name")
            for scope in resource["scopeSpans"]:
                found.extend({**span, "service": service} for span in scope["spans"])
    return found


def test_meshtrace_run_instruments_an_unmodified_program(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(APP)
    result = subprocess.run([str(RUN), "--service-name", "auto-svc", sys.executable, str(script)],
                            cwd=tmp_path, env=clean_env(tmp_path), capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("BODY"))
    _, traceparent, request_id = line.split()
    assert request_id == "rid-auto"
    spans = spans_in(tmp_path / "spans.jsonl")
    by_name = {span["name"]: span for span in spans}
    server, client = by_name["GET /hello/<name>"], by_name["GET"]
    assert {span["service"] for span in spans} == {"auto-svc"}
    assert client["parentSpanId"] == server["spanId"]
    assert traceparent.split("-")[1:3] == [client["traceId"], client["spanId"]]


def test_import_meshtrace_auto_and_disabled_instrumentations(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text("import meshtrace.auto\n" + APP + textwrap.dedent("""
        import flask.app, httpx
        print("FLASK", hasattr(flask.app.Flask.wsgi_app, "__wrapped__"))
        print("HTTPX", hasattr(httpx.Client._send_single_request, "__wrapped__"))
        print("LOADED", ",".join(meshtrace.auto.instrumented()))
    """))
    env = clean_env(tmp_path, MESHTRACE_DISABLED_INSTRUMENTATIONS="httpx,threading")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "FLASK True" in result.stdout
    assert "HTTPX False" in result.stdout
    assert "LOADED django,flask,requests" in result.stdout
    assert [span["name"] for span in spans_in(tmp_path / "spans.jsonl")] == ["GET /hello/<name>"]


def test_existing_sitecustomize_still_runs(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "sitecustomize.py").write_text("print('THEIR SITECUSTOMIZE')\n")
    env = clean_env(tmp_path, PYTHONPATH=str(theirs))
    code = "import sys, meshtrace.auto; print('MAIN', sorted(sys.modules['meshtrace.auto'].instrumented()))"
    result = subprocess.run([str(RUN), sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # The launcher is a Python process too (it runs theirs once itself); the program's own start-up runs
    # ours, which hands over to theirs before the program's first line.
    assert lines[-2] == "THEIR SITECUSTOMIZE"
    assert lines[-1].startswith("MAIN [")
    assert "'flask'" in lines[-1]


def test_broken_configuration_never_breaks_the_program(tmp_path: Path) -> None:
    env = clean_env(tmp_path, MESHTRACE_EXPORTER="no-such-exporter")
    result = subprocess.run([str(RUN), sys.executable, "-c", "print('still runs')"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0
    assert result.stdout.strip() == "still runs"
    assert "configure() failed" in result.stderr


def test_unknown_command_fails_like_a_shell(tmp_path: Path) -> None:
    result = subprocess.run([str(RUN), "no-such-command-xyz"], cwd=tmp_path, env=clean_env(tmp_path),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 127
    assert "cannot run" in result.stderr
