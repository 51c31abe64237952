"""`x-request-id` values: random (version 4) UUIDs, as Envoy makes them, from a batch of OS randomness.

`str(uuid.uuid4())` costs a getrandom() call, a UUID object and its formatting per request; here one
`os.urandom` call serves 256 ids, and the whole batch is formatted at once by a few dozen C-level slice operations
(the version and variant bits set by translating every 16th byte, the hex digits of all ids made by one `hexlify`
and laid out around the dashes column by column), so an id costs one slice and a `list.pop()`; each id is kept as
bytes (for the header) and as text (for the hop record) from one decode of the whole batch. The bits are the
OS's, as with uuid4 (ids are visible to clients, so a seeded PRNG whose state they could recover is not used). A
forked child drops the parent's unused ids, so the two never hand out the same ones. The sidecar draws the next
batch ahead of time (`prefill`, when its loop is idle), so no request pays for one. Called from the event loop's
thread only (the batch is not locked).
"""

from __future__ import annotations

import os
from binascii import hexlify

__all__ = ["new_request_id", "new_request_id_pair", "prefill"]

_BATCH = 256
_LOW = 64       # prefill() draws the next batch once fewer ids than this are left
_VERSION_4 = bytes(b & 0x0F | 0x40 for b in range(256))     # translation tables: byte 6 and byte 8 of a UUID
_RFC_4122 = bytes(b & 0x3F | 0x80 for b in range(256))
# Where hex digit j of an id goes in its 36 characters: 8-4-4-4-12, a dash after digits 8, 12, 16 and 20.
_LAYOUT = tuple((digit, digit + (digit >= 8) + (digit >= 12) + (digit >= 16) + (digit >= 20)) for digit in range(32))

_ids: list[tuple[bytes, str]] = []


def new_request_id() -> bytes:
    """A fresh random UUID as 36 ASCII bytes, e.g. b"0f2b4f6e-8e8b-4a4b-9b0a-1c2d3e4f5a6b"."""
    if not _ids:
        _ids.extend(_draw(_BATCH))
    return _ids.pop()[0]


def new_request_id_pair() -> tuple[bytes, str]:
    """A fresh id as `new_request_id` makes it, and the same id as text."""
    if not _ids:
        _ids.extend(_draw(_BATCH))
    return _ids.pop()


def prefill() -> None:
    """Draw the next batch before this one runs out, for when the loop has nothing else to do (proxy.reports): a
    batch costs about as much as a whole request, and the request that found the batch empty would pay for it."""
    if len(_ids) < _LOW:
        _ids[:0] = _draw(_BATCH)


def _draw(count: int) -> list[tuple[bytes, str]]:
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = raw[6::16].translate(_VERSION_4)
    raw[8::16] = raw[8::16].translate(_RFC_4122)
    digits = hexlify(raw)
    text = bytearray(b"-" * (36 * count))
    for digit, column in _LAYOUT:
        text[column::36] = digits[digit::32]
    batch = bytes(text)
    texts = batch.decode("ascii")
    return [(batch[i:i + 36], texts[i:i + 36]) for i in range(0, 36 * count, 36)]


def _forget_batch() -> None:
    _ids.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_batch)
