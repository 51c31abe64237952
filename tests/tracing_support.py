"""Helpers shared by the span tests: predictable ids, so two spans made the same way compare equal."""

from __future__ import annotations

from opentelemetry.sdk.trace.id_generator import IdGenerator


class CountingIds(IdGenerator):
    """Ids 1, 2, 3, ... (trace ids offset to 0xABC0000 + n): the same sequence for every provider that uses it."""

    def __init__(self) -> None:
        self.next = 0

    def generate_span_id(self) -> int:
        self.next += 1
        return self.next

    def generate_trace_id(self) -> int:
        self.next += 1
        return 0xABC0000 + self.next
