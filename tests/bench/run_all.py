"""Run every benchmark script in tests/bench in turn and print their reports: what `make bench` runs.

Theory of operation. A benchmark is any `bench_*.py` beside this file; each stays a standalone script, so each
runs here exactly as a person would run it alone (`python tests/bench/bench_x.py`), in its own process with its
default settings, one after the other so they never compete for the CPU. A failing benchmark does not stop the
others; the exit status says whether all of them finished, and the last lines list the ones that did not.

    python tests/bench/run_all.py [--only export --only proxy] [--list]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent


def scripts(directory: Path = HERE, only: Sequence[str] = ()) -> list[Path]:
    """The benchmark scripts in `directory`, by name; `only` keeps those named (`proxy` or `bench_proxy.py`)."""
    found = sorted(directory.glob("bench_*.py"))
    if not only:
        return found
    wanted = {name.removesuffix(".py").removeprefix("bench_") for name in only}
    unknown = wanted - {p.stem.removeprefix("bench_") for p in found}
    if unknown:
        raise SystemExit(f"no such benchmark: {', '.join(sorted(unknown))} "
                         f"(there are: {', '.join(p.stem.removeprefix('bench_') for p in found)})")
    return [p for p in found if p.stem.removeprefix("bench_") in wanted]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run this benchmark only (repeatable): export, library, proxy, …")
    parser.add_argument("--list", action="store_true", help="print the benchmark scripts and exit")
    parser.add_argument("--dir", type=Path, default=HERE, help=argparse.SUPPRESS)    # for the runner's own tests
    args = parser.parse_args(argv)
    chosen = scripts(args.dir, args.only)
    if args.list:
        print("\n".join(str(p) for p in chosen))
        return 0
    failed: list[str] = []
    for script in chosen:
        print(f"\n── {script.name} " + "─" * max(0, 60 - len(script.name)), flush=True)
        started = time.monotonic()
        # Output goes straight to ours: each report appears as it is made, and a long benchmark shows progress.
        code = subprocess.run([sys.executable, str(script)], check=False).returncode
        took = time.monotonic() - started
        print(f"── {script.name}: {'done' if code == 0 else f'FAILED (exit {code})'} in {took:.0f}s", flush=True)
        if code != 0:
            failed.append(script.name)
    print(f"\n{len(chosen) - len(failed)} of {len(chosen)} benchmarks finished"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
