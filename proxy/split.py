"""Weighted `route[]` splits: one pick per request from cumulative weights and an injected RNG.

Like Envoy's weighted clusters (a random value per request modulo the total weight), picks are random, not a
weighted round-robin. A run that must be repeatable (the demo's tests check the split's proportions over a
hundred-odd requests) sets `MESHTRACE_SPLIT_SEED`: each split then draws from its own RNG seeded with that
value and its weights, so the sequence of picks no longer depends on the process or on the router's shared RNG
(which faults, retries, mirrors and balancers draw from too, in an order set by request timing).
"""

from __future__ import annotations

import bisect
import os
import random
from collections.abc import Sequence
from typing import Generic, TypeVar

__all__ = ["SEED_ENV", "WeightedChoice"]

#: The environment variable that makes every split's picks a fixed sequence (see the module docstring).
SEED_ENV = "MESHTRACE_SPLIT_SEED"

T = TypeVar("T")


class WeightedChoice(Generic[T]):
    """Pick items in proportion to integer weights (Istio: weights are relative; 0 never picked).

    A single item (or a single non-zero weight) costs no RNG call at all. With `MESHTRACE_SPLIT_SEED` set when
    the split is built, `rng` is replaced by one seeded from that value and the weights.
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
        self._rng = _seeded(weights) or rng
        self._only = self._items[0] if len(self._items) == 1 else None

    def pick(self) -> T:
        if self._only is not None:
            return self._only
        # randrange over the integer total: exact proportions, no float rounding at the 1% end.
        return self._items[bisect.bisect_right(self._cumulative, self._rng.randrange(self._total))]


def _seeded(weights: Sequence[int]) -> random.Random | None:
    seed = os.environ.get(SEED_ENV)
    if not seed:
        return None
    # A str seed is hashed with SHA-512, the same in every process (unlike hash() under PYTHONHASHSEED); the
    # weights keep two differently weighted splits of one proxy from drawing the very same values.
    return random.Random(f"{seed}:{','.join(map(str, weights))}")
