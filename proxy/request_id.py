"""`x-request-id` values: random (version 4) UUIDs, as Envoy makes them, from a buffer of OS randomness.

`str(uuid.uuid4())` costs a getrandom() call, a UUID object and its formatting per request; here one
`os.urandom` call serves 256 ids and each id is formatted straight to bytes. The bits are the OS's, as with
uuid4 (ids are visible to clients, so a seeded PRNG whose state they could recover is not used). A forked child
drops the parent's buffer, so the two never hand out the same ids. Called from the event loop's thread only (the
buffer offset is not locked).
"""

from __future__ import annotations

import os

__all__ = ["new_request_id"]

_BATCH = 256

_buffer = b""
_offset = 0


def new_request_id() -> bytes:
    """A fresh random UUID as 36 ASCII bytes, e.g. b"0f2b4f6e-8e8b-4a4b-9b0a-1c2d3e4f5a6b"."""
    global _buffer, _offset  # noqa: PLW0603  (one buffer per process)
    offset = _offset
    if offset >= len(_buffer):
        _buffer = os.urandom(16 * _BATCH)
        offset = 0
    _offset = offset + 16
    raw = bytearray(_buffer[offset:offset + 16])
    raw[6] = raw[6] & 0x0F | 0x40                   # version 4
    raw[8] = raw[8] & 0x3F | 0x80                   # RFC 4122 variant
    digits = raw.hex()
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}".encode()


def _forget_buffer() -> None:
    global _buffer, _offset  # noqa: PLW0603
    _buffer = b""
    _offset = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_buffer)
