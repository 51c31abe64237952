"""The hop span on meshtrace's encoded lane (see proxy.hop_wire, which writes its OTLP bytes when it ends).

Not compiled with the request path (meshtrace/compiled.py): its base class is the API's `NonRecordingSpan`, which
the build's type check cannot see (no runtime dependencies there), and mypyc would then lay out a native class
without the instance dictionary the base class gives it.
"""

from __future__ import annotations

from opentelemetry.trace import NonRecordingSpan, SpanContext

from meshtrace.encodedlane import EncodedLane

__all__ = ["HopSpan"]


class HopSpan(NonRecordingSpan):
    """A hop span on the encoded lane (see the module docstring); `parent` is None for a root."""

    # Slots: one is made per request, and then no instance dict is (the API's Span classes have none of their own,
    # so one is still there for anyone who sets other attributes).
    __slots__ = ("_context", "context", "ended", "lane", "name", "parent", "sampled", "start_time")

    _context: SpanContext
    context: SpanContext
    parent: SpanContext | None
    name: str
    start_time: int
    sampled: bool
    lane: EncodedLane
    ended: bool

    def __init__(self, context: SpanContext, parent: SpanContext | None, name: str,  # noqa: PLR0917
                 start_time: int, sampled: bool, lane: EncodedLane) -> None:
        # Every slot, NonRecordingSpan's `_context` too (its __init__ sets only that one: not called).
        self._context = self.context = context
        self.parent = parent
        self.name = name
        self.start_time = start_time
        self.sampled = sampled
        self.lane = lane
        self.ended = False

    def is_recording(self) -> bool:
        return not self.ended

    def __repr__(self) -> str:
        return f"HopSpan({self.name!r}, {self._context!r})"
