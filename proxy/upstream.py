"""One keep-alive HTTP/1.1 connection to an upstream host, lent by its pool to one exchange at a time.

Theory of operation. States: idle in the pool (`user is None`) -> busy (`user` set by `attach`) -> back to idle
after `on_response_end` if both sides agreed to keep-alive and the request went out whole, else closed.
Bytes arriving while idle mean the upstream broke framing: the connection is closed. After a `101` the parser
is bypassed and bytes go raw to the user (`tunnel`). Flow control is the user's: `pause_writing` here pauses
reading on the downstream, and the downstream's `pause_writing` pauses reading here. While lent, the parser calls
the user's response callbacks directly (its `sink`); whenever the user is let go, the sink is this connection
again, whose callbacks then have nobody to tell (one Python call fewer per callback on the common path).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol, cast

from .codec import ResponseCodec, ResponseHead
from .errors import ProtocolError

if TYPE_CHECKING:
    from .pool import ConnectionPool

__all__ = ["UpstreamConnection", "UpstreamUser"]


class UpstreamUser(Protocol):
    """What an exchange must answer to while it holds an upstream connection."""

    def on_response_head(self, head: ResponseHead) -> None: ...
    def on_response_body(self, data: bytes) -> None: ...
    def on_response_end(self) -> None: ...
    def on_upstream_lost(self, protocol_error: str | None) -> None: ...
    def on_tunnel_data(self, data: bytes) -> None: ...
    def on_upstream_write_paused(self, paused: bool) -> None: ...
    def on_read_complete(self) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    __slots__ = ("closed", "codec", "got_response_bytes", "idle_since", "limits", "pool", "requests", "reused",
                 "transport", "tunnel", "user")

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.user: UpstreamUser | None = None
        self.codec = ResponseCodec(self)
        self.closed = False
        self.reused = False
        self.tunnel = False
        self.got_response_bytes = False
        self.idle_since = 0.0
        self.requests = 0               # requests lent for (maxRequestsPerConnection)
        self.limits = pool.limits       # the breakers whose connection slot this holds until it closes

    # -- lending ---------------------------------------------------------------------------------------------
    def attach(self, user: UpstreamUser, head_request: bool) -> None:
        self.user = user
        self.requests += 1
        codec = self.codec
        codec.sink = user
        codec.head_request = head_request
        self.got_response_bytes = False

    def detach(self) -> None:
        self.user = None
        self.codec.sink = self

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def writelines(self, parts: list[bytes]) -> None:
        if self.transport is not None and not self.closed:
            self.transport.writelines(parts)

    def close(self) -> None:
        """Close and forget the user: nothing more is reported to it."""
        self.detach()
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self.detach()
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # -- asyncio.Protocol --------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.transport = transport
        transport.set_write_buffer_limits(high=256 * 1024)

    def data_received(self, data: bytes) -> None:
        user = self.user
        if user is None:
            self.close()                # unsolicited bytes on an idle connection: framing is lost
            return
        self.got_response_bytes = True
        if self.tunnel:
            user.on_tunnel_data(data)
            return
        try:
            offset = self.codec.feed(data)
        except ProtocolError as exc:
            self.abort()
            user.on_upstream_lost(exc.reason)
            return
        if offset is not None:
            self.tunnel = True
            if offset < len(data) and self.user is not None:
                self.user.on_tunnel_data(data[offset:])
        elif self.user is not None:
            self.user.on_read_complete()

    def eof_received(self) -> bool | None:
        return False                    # half-close is not worth keeping: close, then connection_lost reports

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.limits is not None:
            limits = self.limits
            self.limits = None
            limits.connection_closed()
        user = self.user
        self.detach()
        if user is None:
            return
        if self.codec.close_delimited and not self.tunnel:
            self.codec.close_delimited = False
            user.on_response_end()      # a body without length ends with the connection
        else:
            user.on_read_complete()
            user.on_upstream_lost(None)

    def pause_writing(self) -> None:
        if self.user is not None:
            self.user.on_upstream_write_paused(True)

    def resume_writing(self) -> None:
        if self.user is not None:
            self.user.on_upstream_write_paused(False)

    # -- ResponseSink while no user holds the connection (a user gets the parser's callbacks itself) -------------
    def on_response_head(self, head: ResponseHead) -> None:
        if self.user is not None:
            self.user.on_response_head(head)

    def on_response_body(self, data: bytes) -> None:
        if self.user is not None:
            self.user.on_response_body(data)

    def on_response_end(self) -> None:
        user = self.user
        if user is not None:
            user.on_response_end()
