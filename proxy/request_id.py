"""`x-request-id` values: random (version 4) UUIDs, as Envoy makes them, from a batch of OS randomness.

`str(uuid.uuid4())` costs a getrandom() call, a UUID object and its formatting per request; here one `os.urandom`
call serves 256 ids, and the whole batch is formatted at once by a few dozen C-level slice operations (the version
and variant bits set by translating every 16th byte, the hex digits of all ids made by one `hexlify` and laid out
around the dashes column by column) into one run of 36-byte ids, kept as bytes (for the header) and as text (for the
hop record) from one decode. An id is then two slices at an offset: cutting the whole batch into pairs up front took
about 0.9k instructions per id, near half of a batch's 540k (most of the rest is the strided layout). The bits are
the OS's, as with uuid4 (ids are visible to clients, so a seeded PRNG whose state they could recover is not used). A
forked child drops the parent's unused ids, so the two never hand out the same ones. The sidecar draws the next
batch ahead of time (`prefill`, when its loop is idle), so no request pays for one. Called from the event loop's
thread only (the batch is not locked).
"""

from __future__ import annotations

import os
from binascii import hexlify
from typing import Final

__all__ = ["new_request_id", "new_request_id_pair", "prefill"]

_BATCH = 256
_SIZE = 36                      # bytes (and characters) per id
_LOW = 64                       # prefill() draws the next batch once fewer ids than this are left
_VERSION_4 = bytes(b & 0x0F | 0x40 for b in range(256))     # translation tables: byte 6 and byte 8 of a UUID
_RFC_4122 = bytes(b & 0x3F | 0x80 for b in range(256))
# Where hex digit j of an id goes in its 36 characters: 8-4-4-4-12, a dash after digits 8, 12, 16 and 20.
_LAYOUT = tuple((digit, digit + (digit >= 8) + (digit >= 12) + (digit >= 16) + (digit >= 20)) for digit in range(32))


class _Ids:
    """The batch being handed out, where its next id starts, and the batch drawn ahead for after it."""

    __slots__ = ("at", "batch", "spare", "texts")

    def __init__(self) -> None:
        self.batch = b""
        self.texts = ""
        self.at = 0
        self.spare: tuple[bytes, str] | None = None

    def next_pair(self) -> tuple[bytes, str]:
        at = self.at
        if at >= len(self.batch):
            self.batch, self.texts = self.spare if self.spare is not None else _draw(_BATCH)
            self.spare = None
            at = 0
        end = at + _SIZE
        self.at = end
        return self.batch[at:end], self.texts[at:end]

    def forget(self) -> None:
        self.batch = b""
        self.texts = ""
        self.at = 0
        self.spare = None


_ids: Final = _Ids()


def new_request_id() -> bytes:
    """A fresh random UUID as 36 ASCII bytes, e.g. b"0f2b4f6e-8e8b-4a4b-9b0a-1c2d3e4f5a6b"."""
    return _ids.next_pair()[0]


def new_request_id_pair() -> tuple[bytes, str]:
    """A fresh id as `new_request_id` makes it, and the same id as text."""
    return _ids.next_pair()


def prefill() -> None:
    """Draw the next batch before this one runs out, for when the loop has nothing else to do (proxy.reports): a
    request that found the batch empty would pay for drawing one."""
    ids = _ids
    if ids.spare is None and len(ids.batch) - ids.at < _LOW * _SIZE:
        ids.spare = _draw(_BATCH)


def _draw(count: int) -> tuple[bytes, str]:
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = raw[6::16].translate(_VERSION_4)
    raw[8::16] = raw[8::16].translate(_RFC_4122)
    digits = hexlify(raw)
    text = bytearray(b"-" * (_SIZE * count))
    for digit, column in _LAYOUT:
        text[column::_SIZE] = digits[digit::32]
    batch = bytes(text)
    return batch, batch.decode("ascii")


def _forget_batch() -> None:
    _ids.forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_batch)
