"""`make bench` runs tests/bench/run_all.py, which runs every benchmark script in turn, each as it runs alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

RUNNER = Path(__file__).resolve().parent / "run_all.py"
ROOT = RUNNER.parent.parent.parent


def test_make_bench_runs_the_runner() -> None:
    # --no-print-directory: under `make test` (MAKELEVEL set) make would add "Entering/Leaving directory" lines.
    planned = subprocess.run(["make", "--no-print-directory", "-n", "bench"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout
    assert any(".venv/bin/python tests/bench/run_all.py" in line for line in planned.splitlines()), planned


def test_the_runner_finds_every_benchmark_script() -> None:
    listed = subprocess.run([sys.executable, str(RUNNER), "--list"], capture_output=True, text=True,
                            check=True).stdout.split()
    on_disk = sorted(str(p) for p in RUNNER.parent.glob("bench_*.py"))
    assert listed == on_disk
    assert {Path(p).name for p in listed} >= {"bench_export.py", "bench_library.py", "bench_proxy.py"}


def test_each_report_is_printed_and_a_failure_does_not_stop_the_rest(tmp_path: Path) -> None:
    (tmp_path / "bench_a.py").write_text("import sys\nprint('report a', sys.argv[1:])\n")
    (tmp_path / "bench_b.py").write_text("print('half a report b')\nraise SystemExit(3)\n")
    (tmp_path / "bench_c.py").write_text("print('report c')\n")
    (tmp_path / "helper.py").write_text("raise SystemExit('not a benchmark: never run')\n")
    done = subprocess.run([sys.executable, str(RUNNER), "--dir", str(tmp_path)], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 1
    out = done.stdout
    # In name order, each under its own heading, run with no arguments.
    assert out.index("── bench_a.py") < out.index("report a []") < out.index("── bench_b.py") < out.index("report c")
    assert "── bench_b.py: FAILED (exit 3)" in out
    assert out.rstrip().endswith("2 of 3 benchmarks finished; failed: bench_b.py")
    assert "never run" not in out + done.stderr
    only = subprocess.run([sys.executable, str(RUNNER), "--dir", str(tmp_path), "--only", "c"], capture_output=True,
                          text=True, check=True).stdout
    assert "report c" in only
    assert "report a" not in only
    assert only.rstrip().endswith("1 of 1 benchmarks finished")
