"""Baggage carried one header per entry (`uberctx-<key>`, `ot-baggage-<key>`), bounded like W3C baggage."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Final

from meshtrace.propagation._common import header_token

__all__ = ["MAX_BYTES", "MAX_ENTRIES", "bounded", "render"]

# The header-per-entry formats define no limits; borrow W3C baggage's so an inbound flood stays cheap.
MAX_ENTRIES: Final = 180
MAX_BYTES: Final = 8192


def bounded(pairs: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """At most MAX_ENTRIES pairs and MAX_BYTES of key+value; entries that would overflow are skipped."""
    total = 0
    count = 0
    for key, value in pairs:
        size = len(key.encode()) + len(value.encode()) + 1
        if total + size > MAX_BYTES:
            continue
        total += size
        count += 1
        yield key, value
        if count == MAX_ENTRIES:
            return


def render(
    prefix: str, entries: Mapping[str, object], encode: Callable[[str], str | None]
) -> Iterator[tuple[str, str]]:
    """`prefix + key: encode(value)` for each entry whose key is a header token and whose value encodes."""
    if not entries:
        return

    def candidates() -> Iterator[tuple[str, str]]:
        for key, value in entries.items():
            if not header_token(key):
                continue
            encoded = encode(str(value))
            if encoded is not None:
                yield key, encoded

    for key, encoded in bounded(candidates()):
        yield prefix + key, encoded
