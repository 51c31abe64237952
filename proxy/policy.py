"""What a matched Istio route asks of one exchange beyond its destination: header edits, fault, retries, mirror.

Built once per `http[]` rule (and destination) when the rules load; the exchange only reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .fault import FaultPolicy
from .headers import Headers
from .istio_config import HeaderOps
from .mirror import MirrorPolicy
from .retry import RetryPolicy

__all__ = ["HeaderEdits", "RoutePolicy", "merge_edits"]


@dataclass(frozen=True, slots=True)
class HeaderEdits:
    """`headers.{request|response}` as bytes: remove, then set (replace), then add (append)."""

    set: tuple[tuple[bytes, bytes], ...] = ()
    add: tuple[tuple[bytes, bytes], ...] = ()
    remove: frozenset[bytes] = frozenset()

    @classmethod
    def of(cls, ops: HeaderOps) -> HeaderEdits:
        return cls(tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in ops.set),
                   tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in ops.add),
                   frozenset(h.encode("latin-1") for h in ops.remove))

    def __bool__(self) -> bool:
        return bool(self.set or self.add or self.remove)

    def apply(self, headers: Headers) -> Headers:
        drop = self.remove | {name for name, _ in self.set}
        out = [pair for pair in headers if pair[0] not in drop] if drop else headers
        out.extend(self.set)
        out.extend(self.add)
        return out


def merge_edits(first: HeaderEdits, second: HeaderEdits) -> HeaderEdits:
    """Rule-level edits then destination-level ones (Istio applies both; the destination's win on `set`)."""
    if not first:
        return second
    if not second:
        return first
    names = {name for name, _ in second.set}
    return HeaderEdits(tuple(p for p in first.set if p[0] not in names) + second.set, first.add + second.add,
                       first.remove | second.remove)


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    request_headers: HeaderEdits = HeaderEdits()
    response_headers: HeaderEdits = HeaderEdits()
    fault: FaultPolicy | None = None
    retries: RetryPolicy | None = None
    rule: str = ""                      # the VirtualService rule's origin, for logs
    mirror: MirrorPolicy | None = None  # `mirror` + `mirrorPercentage`: a shadow copy of the request
