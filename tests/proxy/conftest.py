"""Fixtures for the sidecar tests: an upstream app and an in-process sidecar in front of it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from proxy_harness import SidecarThread, UpstreamServer, sidecar_config


@pytest.fixture
def upstream() -> Iterator[UpstreamServer]:
    server = UpstreamServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def sidecar(upstream: UpstreamServer) -> Iterator[SidecarThread]:
    proxy = SidecarThread(sidecar_config(upstream.port, outbound=None))
    try:
        yield proxy
    finally:
        proxy.close()
