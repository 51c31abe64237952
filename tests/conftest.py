"""Shared fixtures: a real Jaeger for the e2e tests (a failure in CI when missing, a skip locally)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import jaeger_process as jaeger_mod


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
