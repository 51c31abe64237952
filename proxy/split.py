"""Weighted `route[]` splits: one pick per request from cumulative weights and an injected RNG."""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from typing import Generic, TypeVar

__all__ = ["WeightedChoice"]

T = TypeVar("T")


class WeightedChoice(Generic[T]):
    """Pick items in proportion to integer weights (Istio: weights are relative; 0 never picked).

    A single item (or a single non-zero weight) costs no RNG call at all.
    """

    __slots__ = ("_cumulative", "_items", "_only", "_rng", "_total")

    def __init__(self, items: Sequence[T], weights: Sequence[int], rng: random.Random) -> None:
        if len(items) != len(weights) or not items:
            raise ValueError("need one weight per item, and at least one item")
        if len(items) == 1:
            weights = [1]
        pairs = [(item, w) for item, w in zip(items, weights, strict=True) if w > 0]
        if not pairs:
            raise ValueError("all weights are 0")
        self._items = [item for item, _ in pairs]
        cumulative = []
        total = 0
        for _, w in pairs:
            total += w
            cumulative.append(total)
        self._cumulative = cumulative
        self._total = total
        self._rng = rng
        self._only = self._items[0] if len(self._items) == 1 else None

    def pick(self) -> T:
        if self._only is not None:
            return self._only
        # randrange over the integer total: exact proportions, no float rounding at the 1% end.
        return self._items[bisect.bisect_right(self._cumulative, self._rng.randrange(self._total))]
