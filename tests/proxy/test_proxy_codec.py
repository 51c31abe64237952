"""The codec without sockets: events, the checks added on top of llhttp, response framing, encoders."""

from __future__ import annotations

import pytest

from meshtrace.proxy.codec import (
    RequestCodec,
    RequestHead,
    ResponseCodec,
    ResponseHead,
    encode_request_head,
    encode_response_head,
)
from meshtrace.proxy.errors import ProtocolError
from meshtrace.proxy.headers import HOP_BY_HOP, connection_tokens, drop_set, filter_headers
from meshtrace.proxy.router import InboundRouter, OutboundRouter, RouteDecision, split_authority


class Sink:
    def __init__(self) -> None:
        self.events: list[object] = []

    def on_request_head(self, head: RequestHead) -> None:
        self.events.append(head)

    def on_request_body(self, data: bytes) -> None:
        self.events.append(data)

    def on_request_end(self) -> None:
        self.events.append("end")

    def on_response_head(self, head: ResponseHead) -> None:
        self.events.append(head)

    def on_response_body(self, data: bytes) -> None:
        self.events.append(data)

    def on_response_end(self) -> None:
        self.events.append("end")


def test_request_events_and_lowercased_headers() -> None:
    sink = Sink()
    codec = RequestCodec(sink)
    codec.feed(b"POST /a?b HTTP/1.1\r\nHost: x\r\nX-Thing: V\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"
               b"X-Trailer: dropped\r\n\r\n")
    head, body, end = sink.events
    assert isinstance(head, RequestHead)
    assert (head.method, head.target, head.version, head.chunked) == (b"POST", b"/a?b", b"1.1", True)
    assert head.headers == [(b"host", b"x"), (b"x-thing", b"V"), (b"transfer-encoding", b"chunked")]
    assert (body, end) == (b"abc", "end")


def test_a_head_split_across_reads_is_tracked_as_started() -> None:
    sink = Sink()
    codec = RequestCodec(sink)
    codec.feed(b"GET / HT")
    assert codec.started
    assert not sink.events
    codec.feed(b"TP/1.1\r\nHost: a\r\n\r\n")
    assert not codec.started
    assert len(sink.events) == 2


@pytest.mark.parametrize(("raw", "status"), [
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 70000 + b"\r\n\r\n", 431),
])
def test_checks_beyond_llhttp(raw: bytes, status: int) -> None:
    with pytest.raises(ProtocolError) as info:
        RequestCodec(Sink()).feed(raw)
    assert info.value.status == status


def test_upgrade_returns_the_offset_of_raw_bytes() -> None:
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nRAW"
    assert RequestCodec(Sink()).feed(raw) == len(raw) - 3


def test_response_to_head_has_no_body_whatever_its_length() -> None:
    sink = Sink()
    codec = ResponseCodec(sink)
    codec.head_request = True
    codec.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    assert sink.events[1:] == ["end"]
    codec.head_request = False
    codec.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")     # the parser starts clean
    assert sink.events[-2:] == [b"ok", "end"]


def test_interim_responses_are_swallowed_and_close_delimited_is_flagged() -> None:
    sink = Sink()
    codec = ResponseCodec(sink)
    codec.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\nbody")
    head = sink.events[0]
    assert isinstance(head, ResponseHead)
    assert head.status == 200
    assert sink.events[1:] == [b"body"]
    assert codec.close_delimited


def test_garbage_response_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError) as info:
        ResponseCodec(Sink()).feed(b"HELLO\r\n\r\n")
    assert info.value.status == 502


def test_encoders() -> None:
    assert encode_response_head(204, [(b"a", b"b")]) == b"HTTP/1.1 204 No Content\r\na: b\r\n\r\n"
    assert encode_request_head(b"GET", b"/", [(b"host", b"x")]) == b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"


def test_hop_by_hop_filter() -> None:
    assert connection_tokens(b"Keep-Alive, X-Foo ,") == {b"keep-alive", b"x-foo"}
    drop = drop_set(HOP_BY_HOP, b"x-foo")
    headers = [(b"x-foo", b"1"), (b"te", b"trailers"), (b"x-bar", b"2")]
    assert filter_headers(headers, drop) == [(b"x-bar", b"2")]


def _head(target: bytes, host: bytes = b"h") -> RequestHead:
    return RequestHead(b"GET", target, b"1.1", [(b"host", host)], hmap={b"host": host}, keep_alive=True,
                       upgrade=False)


def test_routers() -> None:
    assert split_authority(b"Svc:81") == ("svc", 81)
    assert split_authority(b"[::1]:90") == ("::1", 90)
    assert split_authority(b"svc") == ("svc", 80)
    assert split_authority(b"svc:99999") is None
    inbound = InboundRouter("127.0.0.1", 8080).route(_head(b"http://x:1/p?q"))
    assert inbound is not None
    assert (inbound.target, inbound.authority, inbound.rewrite_host) == (b"/p?q", b"x:1", True)
    outbound = OutboundRouter({("127.0.0.1", 15001)})
    decision = outbound.route(_head(b"/p", b"reviews:9080"))
    assert decision is not None
    assert (decision.route.host, decision.route.port, decision.route.cluster) == ("reviews", 9080,
                                                                                  "outbound|9080||reviews")
    assert outbound.route(_head(b"/p", b"127.0.0.1:15001")) is None          # would loop
    assert outbound.route(_head(b"https://x/p")) is None                     # no TLS origination


# -- the whole-head checks: each must give what a per-header check gave, however the bytes are cut into reads -------
def _feed_in_reads(codec: RequestCodec | ResponseCodec, raw: bytes, size: int) -> None:
    for at in range(0, len(raw), size):
        codec.feed(raw[at:at + size])


@pytest.mark.parametrize("size", [1, 7, 100, 1 << 20])
def test_request_version_is_the_same_from_the_read_and_from_httptools(size: int) -> None:
    # Pipelined, split, with leading empty lines (llhttp skips them) and an HTTP/1.0 request whose target ends in
    # "HTTP/1.1": the version read from the bytes of a read must never differ from the one llhttp parsed.
    raw = (b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
           b"\r\nPOST /HTTP/1.1 HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"
           b"GET /c HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
           b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
    sink = Sink()
    _feed_in_reads(RequestCodec(sink), raw, size)
    heads = [event for event in sink.events if isinstance(event, RequestHead)]
    assert [(head.method, head.target, head.version) for head in heads] == [
        (b"GET", b"/a", b"1.1"), (b"POST", b"/HTTP/1.1", b"1.0"), (b"GET", b"/c", b"1.0"), (b"OPTIONS", b"*", b"1.1")]
    alone = Sink()
    _feed_in_reads(RequestCodec(alone), b"GET /HTTP/1.1 HTTP/1.0\r\n\r\n", size)    # a read's first head
    _feed_in_reads(RequestCodec(alone), b"\r\n\r\nGET /HTTP/1.1 HTTP/1.0\r\n\r\n", size)  # after empty lines
    assert [(head.target, head.version) for head in alone.events if isinstance(head, RequestHead)] == [
        (b"/HTTP/1.1", b"1.0")] * 2


@pytest.mark.parametrize("size", [1, 1000, 1 << 20])
@pytest.mark.parametrize(("raw", "status"), [
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 70000 + b"\r\n\r\n", 431),
    (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(100)) + b"\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\nHost: b\r\n\r\n", 400),
])
def test_limits_and_repeated_host_hold_however_the_head_is_read(raw: bytes, status: int, size: int) -> None:
    with pytest.raises(ProtocolError) as info:
        _feed_in_reads(RequestCodec(Sink()), raw, size)
    assert info.value.status == status


def test_a_head_exactly_at_the_limits_passes() -> None:
    # 99 headers of `X-nn:v` (no space: the limit counts 4 bytes per header, the wire has 3) plus Host.
    names = [b"X-%02d" % i for i in range(99)]
    head = b"GET / HTTP/1.1\r\nHost:a\r\n" + b"".join(name + b":v\r\n" for name in names) + b"\r\n"
    sink = Sink()
    RequestCodec(sink, max_headers=100, max_header_bytes=1 + 4 + 1 + 4 + 99 * (4 + 1 + 4)).feed(head)
    request = sink.events[0]
    assert isinstance(request, RequestHead)
    assert len(request.headers) == 100
    with pytest.raises(ProtocolError):
        RequestCodec(Sink(), max_headers=100, max_header_bytes=1 + 4 + 1 + 4 + 99 * (4 + 1 + 4) - 1).feed(head)


def test_trailers_are_forgotten_and_the_next_head_is_whole() -> None:
    sink = Sink()
    codec = RequestCodec(sink)
    codec.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nX-T: 1\r\n\r\n"
               b"GET /n HTTP/1.1\r\nHost: b\r\nX-N: 2\r\n\r\n")
    second = sink.events[-2]
    assert isinstance(second, RequestHead)
    assert second.headers == [(b"host", b"b"), (b"x-n", b"2")]
    assert second.hmap == {b"host": b"b", b"x-n": b"2"}


@pytest.mark.parametrize("size", [1, 9, 1 << 20])
def test_response_heads_repeated_names_trailers_and_head_requests(size: int) -> None:
    sink = Sink()
    codec = ResponseCodec(sink)
    raw = (b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nConnection: keep-alive\r\nSet-Cookie: b=2\r\n"
           b"Connection: x-drop\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n")
    _feed_in_reads(codec, raw, size)
    head = sink.events[0]
    assert isinstance(head, ResponseHead)
    assert [pair for pair in head.headers if pair[0] == b"set-cookie"] == [(b"set-cookie", b"a=1"),
                                                                            (b"set-cookie", b"b=2")]
    assert (head.connection, head.chunked, head.content_length) == (b"keep-alive,x-drop", True, None)
    codec.head_request = True
    _feed_in_reads(codec, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n", size)
    codec.head_request = False
    _feed_in_reads(codec, b"HTTP/1.1 204 No Content\r\nX-B: 2\r\n\r\n", size)
    heads = [event for event in sink.events if isinstance(event, ResponseHead)]
    assert [head.headers for head in heads[1:]] == [[(b"content-length", b"5"), (b"x-a", b"1")], [(b"x-b", b"2")]]
    assert heads[1].content_length == b"5"


@pytest.mark.parametrize("size", [1000, 1 << 20])
def test_response_headers_too_large_however_they_are_read(size: int) -> None:
    with pytest.raises(ProtocolError) as info:
        _feed_in_reads(ResponseCodec(Sink()), b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n", size)
    assert info.value.status == 502


def test_the_inbound_routers_decision_keeps_target_and_host_with_no_policy() -> None:
    router = InboundRouter("127.0.0.1", 8080)
    decision = router.route(_head(b"/p?q", b"h:1"))
    assert decision == RouteDecision(router.route_, b"/p?q", b"h:1")
    assert decision is not None
    assert (decision.rewrite_host, decision.policy, decision.no_host) == (False, None, False)
    assert decision != RouteDecision(router.route_, b"/p?q", b"h:1", no_host=True)    # every field compared
