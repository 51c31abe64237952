"""requests: trace headers written straight into CaseInsensitiveDict's store read back as `__setitem__`'s.

The direct write relies on requests' private layout (lowercase name -> (name as set, value) in an OrderedDict);
these tests fail if the installed requests lays its headers out otherwise, and show the fallback then used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests.adapters
from requests.structures import CaseInsensitiveDict

from meshtrace.integrations import requests as mt_requests
from meshtrace.integrations._client import set_each

PAIRS = (("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), ("x-b3-sampled", "1"),
         ("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"), ("x-request-id", "rid-1"))
KEYED = tuple((name, (name, value)) for name, value in PAIRS)  # as MeshPropagator.child_keyed gives them


@pytest.fixture
def instrumented() -> Iterator[None]:
    mt_requests.instrument()
    try:
        yield
    finally:
        mt_requests.uninstrument()


def test_the_installed_requests_passes_the_store_probe(instrumented: None) -> None:
    # If this fails, requests changed how it stores headers: the direct write is off (correct, but slower).
    assert mt_requests.store_write_matches(CaseInsensitiveDict)
    assert mt_requests.instrumentor.client.write_headers is mt_requests._write_into_store


def test_direct_write_reads_back_as_setitem_does(instrumented: None) -> None:
    start = {"User-Agent": "t/1", "X-B3-Sampled": "0", "X-Request-ID": "old", "Accept": "*/*"}
    direct, public = CaseInsensitiveDict(start), CaseInsensitiveDict(start)
    mt_requests._write_into_store(direct, KEYED)
    set_each(public, KEYED)
    assert list(direct.items()) == list(public.items())
    assert direct["X-B3-SAMPLED"] == "1"
    assert direct["X-Request-Id"] == "rid-1"
    assert [name for name in direct if name.lower() == "x-b3-sampled"] == ["x-b3-sampled"]


def test_other_header_types_are_set_the_public_way(instrumented: None) -> None:
    class Headers(CaseInsensitiveDict[str]):
        def __setitem__(self, key: str, value: Any) -> None:
            super().__setitem__(key, value.upper())

    headers = Headers({"Accept": "*/*"})
    mt_requests._write_into_store(headers, KEYED)
    assert headers["x-request-id"] == "RID-1"  # the subclass's own __setitem__ ran


class _OtherLayout(dict[str, str]):
    """A header type whose storage is not requests': the probe must refuse it."""

    def __init__(self, items: Any = ()) -> None:
        super().__init__(items)
        self._store: dict[str, str] = {}


def test_a_store_laid_out_otherwise_fails_the_probe_and_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not mt_requests.store_write_matches(_OtherLayout)
    monkeypatch.setattr(requests.adapters, "CaseInsensitiveDict", _OtherLayout)
    mt_requests.instrument()
    try:
        assert mt_requests.instrumentor.client.write_headers is set_each
    finally:
        mt_requests.uninstrument()
