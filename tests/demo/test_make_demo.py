"""The README's first command, `make demo`, run as written from the repository root: the full demo (300 requests
into the Jaeger that `make test` builds), its report checked as a user would read it, and nothing left running.

The command is taken from the README, so a README that changes it changes what runs here. Only the environment
is set: the Jaeger cache and version point `tests/e2e/build_jaeger.sh` at the binary this test session uses (so
nothing is built), TMPDIR keeps the demo's files in the test's directory, and a marker variable, inherited by
every process below `make`, finds any process left behind.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from demo_support import EXPECTED_EDGES, demo_env, processes_marked
from PIL import Image

import jaeger_process

ROOT = Path(__file__).resolve().parents[2]
MARKER = "MESHTRACE_README_DEMO_TEST"


def readme_commands() -> list[str]:
    """The commands in the README's "Two commands" block, without their comments."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Two commands.*?```sh\n(.*?)```", text, re.DOTALL)
    assert block, "README.md has no 'Two commands' code block"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.split("#", 1)[0].strip()]


def _jaeger_env() -> dict[str, str]:
    binary = jaeger_process.find_binary()
    if binary is None or not binary.name.startswith("jaeger-"):
        message = "no Jaeger binary named jaeger-VERSION: `make test` builds one and sets MESHTRACE_JAEGER_BIN"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return {"MESHTRACE_CACHE": str(binary.parent), "JAEGER_VERSION": binary.name.removeprefix("jaeger-")}


def test_readme_has_the_two_commands() -> None:
    assert readme_commands() == ["make demo", "make test"]


@pytest.mark.jaeger
def test_make_demo_as_written(tmp_path: Path) -> None:
    command = readme_commands()[0]
    env = {k: v for k, v in demo_env().items()
           if k not in {"NO_COLOR", "MESHTRACE_JAEGER_BIN"} and not k.startswith(("MAKE", "MFLAGS"))}
    env.update(_jaeger_env(), TMPDIR=str(tmp_path), **{MARKER: uuid.uuid4().hex})
    if not os.environ.get("CI") and subprocess.run(["make", "-q", ".venv/.installed"], cwd=ROOT, env=env,
                                                   check=False).returncode != 0:
        pytest.skip("the venv is older than the sources here: `make demo` would reinstall it mid-test")
    started = time.monotonic()
    make = subprocess.Popen(command.split(), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = make.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(make.pid, signal.SIGINT)              # as Ctrl-C would: the demo stops what it started
        out, _ = make.communicate(timeout=30)
        pytest.fail(f"`{command}` took over 240s:\n{out[-3000:]}")
    took = time.monotonic() - started
    assert make.returncode == 0, out[-4000:]
    binary = Path(env["MESHTRACE_CACHE"]) / f"jaeger-{env['JAEGER_VERSION']}"
    assert re.search(rf"tracing to Jaeger at http://127\.0\.0\.1:\d+ \(started from {re.escape(str(binary))}\)", out)
    assert "300/300 requests" in out
    assert re.search(r"\n300 requests in [\d.]+s \(\d+ req/s\): 300 x 200; \d+ pages served without reviews", out)
    assert re.search(r"\nreviews versions: v1 \d+%  v2 \d+%  v3 \d+%", out)
    assert re.search(r"── traces \(3 of \d{3}\)", out)
    assert out.count("\ntrace ") == 3
    assert "✗ " in out                                  # a failing trace is among those shown
    assert "  unknown\n  └─► productpage\n      ├─► details\n      └─► reviews\n" in out
    rows = {(m[1], m[2]) for m in re.finditer(r"\n  (\S+) +─► (\S+) +\d+ +[\d.]+ +[\d.]+% +\S+ +\S+", out)
            if "-v" not in m[1] + m[2] and "." not in m[2]}
    assert rows == EXPECTED_EDGES
    picture = re.search(r"graph picture: (\S+)graph\.svg and graph\.png\n", out)
    assert picture, out[-1500:]
    with Image.open(Path(picture[1]) / "graph.png") as png:
        assert png.format == "PNG"
    assert processes_marked(MARKER, env[MARKER]) == []
    print(f"`{command}` took {took:.1f}s")
