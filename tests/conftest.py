"""Shared fixtures: a real Jaeger for the e2e tests (a failure in CI when missing, a skip locally); a guard against
running compiled modules older than their source."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from meshtrace import compiled

import jaeger_process as jaeger_mod


def pytest_sessionstart(session: pytest.Session) -> None:
    # A compiled module shadows its edited source until the next install: tests would run the old code.
    if stale := compiled.stale():
        pytest.exit(f"compiled modules older than their source: {', '.join(stale)}; "
                    "run `make check` (or `pip install -e .`) to recompile", returncode=2)


@pytest.fixture(scope="session")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[jaeger_mod.Jaeger]:
    binary = jaeger_mod.find_binary()
    if binary is None:
        message = ("no Jaeger binary: run tests/e2e/build_jaeger.sh or set MESHTRACE_JAEGER_BIN "
                   "(`make test` does this)")
        if os.environ.get("CI"):
            pytest.fail(f"CI needs a real Jaeger: {message}")
        pytest.skip(message)
    instance = jaeger_mod.start(binary, tmp_path_factory.mktemp("jaeger"))
    try:
        yield instance
    finally:
        instance.close()
