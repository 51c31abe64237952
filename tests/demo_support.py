"""Helpers for the demo tests: run `meshtrace demo` as a user would, and prove nothing it started survives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

MESHTRACE = str(Path(sys.executable).parent / "meshtrace")
EXPECTED_EDGES = {
    ("unknown", "productpage"), ("productpage", "details"), ("productpage", "reviews"),
    ("reviews", "ratings"), ("ratings", "details"),
}


def demo_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MESHTRACE_EXPORTER"))}
    env["NO_COLOR"] = "1"
    return env


def run_demo(tmp: Path, *args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    summary = tmp / "summary.json"
    done = subprocess.run([MESHTRACE, "demo", "--short", "--workdir", str(tmp / "work"), "--summary", str(summary),
                           "--width", "120", *args], capture_output=True, text=True, timeout=timeout, cwd=tmp,
                          env=demo_env(), check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done, json.loads(summary.read_text())


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def survivors(summary: dict[str, Any]) -> list[str]:
    """Processes the demo started that still run: by pid, and by any command line naming its work directory."""
    left = [f"pid {pid}" for pid in summary.get("pids", []) if alive(pid)]
    workdir = summary["workdir"]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if workdir in cmdline and "pytest" not in cmdline and alive(int(proc.name)):
            left.append(f"pid {proc.name}: {cmdline}")
    return left


def processes_marked(variable: str, value: str) -> list[str]:
    """Live processes whose environment has `variable=value`: everything started below a command given that
    variable (each child inherits it), however it was started and whatever its command line says."""
    marker = f"{variable}={value}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in environ and alive(int(proc.name)):
            found.append(f"pid {proc.name}: {cmdline}")
    return found
