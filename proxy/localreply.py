"""Replies the proxy writes itself (bad requests, upstream trouble), worded like Envoy's so operators recognise them."""

from __future__ import annotations

from .codec import encode_response_head

__all__ = ["CONNECTION_TERMINATION", "CONNECT_FAILURE", "build", "reset_before_headers"]

CONNECT_FAILURE = "connection failure"
CONNECTION_TERMINATION = "connection termination"


def reset_before_headers(reason: str, detail: str = "") -> str:
    """Envoy's body for an upstream that failed before sending a response head."""
    text = f"upstream connect error or disconnect/reset before headers. reset reason: {reason}"
    return f"{text}, transport failure reason: {detail}" if detail else text


def build(status: int, body: str, *, close: bool, head_only: bool = False,
          extra: list[tuple[bytes, bytes]] | None = None) -> bytes:
    """A complete text/plain response; `close` adds `connection: close` (the caller then closes)."""
    payload = body.encode("utf-8", "replace") + b"\n"
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(payload)),
               (b"server", b"meshtrace")]
    if extra:
        headers += extra
    if close:
        headers.append((b"connection", b"close"))
    head = encode_response_head(status, headers)
    return head if head_only else head + payload
