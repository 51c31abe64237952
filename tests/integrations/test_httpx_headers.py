"""httpx: trace headers appended to the raw header list read back, and go out, as `Headers.__setitem__`'s.

The direct write relies on httpx's private layout ((name, lowercase name, value) bytes in `Headers._list`); these
tests fail if the installed httpx lays its headers out otherwise, and show the fallback then used.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from meshtrace.integrations import _httpx_headers
from meshtrace.integrations import httpx as mt_httpx
from meshtrace.integrations._client import set_each

if TYPE_CHECKING:
    from integration_support import Sink

pytest_plugins = ["integration_support"]

PAIRS = (("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), ("x-b3-sampled", "1"),
         ("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"), ("x-request-id", "rid-1"))
KEYED = tuple((name, (name, value)) for name, value in PAIRS)  # as MeshPropagator.child_keyed gives them


@pytest.fixture
def instrumented(sink: Sink) -> Iterator[None]:
    mt_httpx.instrument(tracer_provider=sink.provider)
    try:
        yield
    finally:
        mt_httpx.uninstrument()


def test_the_installed_httpx_passes_the_probe(instrumented: None) -> None:
    # If this fails, httpx changed how it stores headers: the direct write is off (correct, but slower).
    assert _httpx_headers.list_write_matches(httpx.Headers)
    assert mt_httpx.instrumentor.client.write_headers is _httpx_headers.write_into_list


@pytest.mark.parametrize("start", [
    [],
    [("Host", "svc"), ("Accept", "*/*"), ("User-Agent", "t/1")],
    [("Accept", "*/*"), ("TraceParent", "user-set"), ("X-B3-Sampled", "0"), ("x-b3-sampled", "0")],  # collide
    [("X-Request-ID", "old")],
], ids=["empty", "disjoint", "user-set-and-duplicates", "request-id"])
@pytest.mark.parametrize("encoding", [None, "iso-8859-1"])
def test_direct_write_reads_back_as_setitem_does(instrumented: None, start: list[tuple[str, str]],
                                                 encoding: str | None) -> None:
    direct, public = httpx.Headers(start, encoding=encoding), httpx.Headers(start, encoding=encoding)
    _httpx_headers.write_into_list(direct, KEYED)
    set_each(public, KEYED)
    assert direct.raw == public.raw
    assert list(direct.multi_items()) == list(public.multi_items())
    assert direct["TRACEPARENT"] == PAIRS[0][1]
    assert direct.get_list("x-b3-sampled") == ["1"]


def test_a_value_outside_the_encoding_fails_as_setitem_does(instrumented: None) -> None:
    keyed = (("x-request-id", ("x-request-id", "caf\u00e9")),)
    direct, public = httpx.Headers({"Accept": "*/*"}, encoding="ascii"), httpx.Headers({"Accept": "*/*"},
                                                                                      encoding="ascii")
    with pytest.raises(UnicodeEncodeError):
        set_each(public, keyed)
    with pytest.raises(UnicodeEncodeError):
        _httpx_headers.write_into_list(direct, keyed)
    assert direct.raw == public.raw


def test_a_headers_subclass_is_set_the_public_way(instrumented: None) -> None:
    class Headers(httpx.Headers):
        def __setitem__(self, key: str, value: str) -> None:
            super().__setitem__(key, value.upper())

    headers = Headers({"Accept": "*/*"})
    _httpx_headers.write_into_list(headers, KEYED)
    assert headers["x-request-id"] == "RID-1"  # the subclass's own __setitem__ ran


class _OtherLayout(httpx.Headers):
    """Headers whose raw list is not where the direct write looks: the probe must refuse the type."""

    def __init__(self, headers: Any = None, encoding: str | None = None) -> None:
        super().__init__(headers, encoding)
        self._shadow: list[tuple[bytes, bytes, bytes]] = self._list
        self._list = []

    @property
    def raw(self) -> list[tuple[bytes, bytes]]:
        return [(key, value) for key, _, value in self._shadow]

    def __setitem__(self, key: str, value: str) -> None:
        self._list, self._shadow = self._shadow, self._list
        try:
            super().__setitem__(key, value)
        finally:
            self._list, self._shadow = self._shadow, self._list


def test_a_layout_the_probe_refuses_is_written_the_public_way(sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not _httpx_headers.list_write_matches(_OtherLayout)
    import httpx._client

    monkeypatch.setattr(httpx._client, "Headers", _OtherLayout)
    mt_httpx.instrument(tracer_provider=sink.provider)
    try:
        assert mt_httpx.instrumentor.client.write_headers is set_each
    finally:
        mt_httpx.uninstrument()


def _sent(asynchronous: bool, headers: dict[str, str]) -> list[list[tuple[bytes, bytes]]]:
    """The raw headers of each request that reached the transport (a redirect, then its target)."""
    seen: list[list[tuple[bytes, bytes]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(list(request.headers.raw))
        if request.url.path == "/start":
            return httpx.Response(302, headers={"Location": "/next"})
        return httpx.Response(200)

    transport = httpx.MockTransport(handler)
    url = "http://svc.local:8080/start"
    if asynchronous:
        async def call() -> None:
            async with httpx.AsyncClient(transport=transport, follow_redirects=True) as client:
                await client.get(url, headers=headers)

        asyncio.run(call())
    else:
        with httpx.Client(transport=transport, follow_redirects=True) as client:
            client.get(url, headers=headers)
    return seen


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_requests_go_out_with_the_headers_setitem_gives(instrumented: None, asynchronous: bool) -> None:
    user = {"Accept": "*/*", "TraceParent": "user-set", "X-Custom": "kept"}
    direct = _sent(asynchronous, user)
    mt_httpx.instrumentor.client.write_headers = set_each
    public = _sent(asynchronous, user)

    def shape(requests: list[list[tuple[bytes, bytes]]]) -> list[list[bytes]]:
        return [[name for name, _ in headers] for headers in requests]   # the values hold fresh span ids

    assert len(direct) == 2  # the first hop (direct write) and the redirect hop (its copied headers: set_each)
    assert shape(direct) == shape(public)
    for headers in direct:
        names = [name.lower() for name, _ in headers]
        assert names.count(b"traceparent") == 1   # the user's is replaced, in its place, not duplicated
        assert dict(headers)[b"traceparent"] != b"user-set"
        assert dict(headers)[b"X-Custom"] == b"kept"
