"""An upstream connection hands its parser's callbacks to the user it is lent to, and to nobody once let go."""

from __future__ import annotations

import asyncio

from meshtrace.proxy.codec import ResponseHead
from meshtrace.proxy.pool import ConnectionPool
from meshtrace.proxy.upstream import UpstreamConnection

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class User:
    def __init__(self, conn: UpstreamConnection | None = None) -> None:
        self.events: list[object] = []
        self.conn = conn

    def on_response_head(self, head: ResponseHead) -> None:
        self.events.append(head.status)
        if self.conn is not None:
            self.conn.abort()           # e.g. a retry on this status: the rest of the read is nobody's

    def on_response_body(self, data: bytes) -> None:
        self.events.append(data)

    def on_response_end(self) -> None:
        self.events.append("end")

    def on_upstream_lost(self, protocol_error: str | None) -> None:
        self.events.append("lost")

    def on_tunnel_data(self, data: bytes) -> None:
        self.events.append(("tunnel", data))

    def on_upstream_write_paused(self, paused: bool) -> None:
        pass

    def on_read_complete(self) -> None:
        self.events.append("read")


def _connection() -> UpstreamConnection:
    loop = asyncio.new_event_loop()
    try:
        pool = ConnectionPool(loop, "127.0.0.1", 1, connect_timeout=1, idle_timeout=1, max_idle=1)
        return UpstreamConnection(pool)
    finally:
        loop.close()


def test_a_lent_connection_reports_to_its_user_and_a_detached_one_to_nobody() -> None:
    conn = _connection()
    first, second = User(), User()
    conn.attach(first, head_request=False)
    conn.data_received(RESPONSE)
    assert first.events == [200, b"ok", "end", "read"]
    conn.detach()
    conn.attach(second, head_request=False)
    conn.data_received(RESPONSE)
    assert second.events == [200, b"ok", "end", "read"]
    assert first.events == [200, b"ok", "end", "read"]      # the earlier user hears nothing more


def test_a_user_that_lets_go_mid_read_hears_nothing_more_of_it() -> None:
    conn = _connection()
    user = User(conn)
    conn.attach(user, head_request=False)
    conn.data_received(RESPONSE)
    assert user.events == [200]
