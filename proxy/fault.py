"""Fault injection decisions (`fault.delay`, `fault.abort`) from percentages and an injected RNG."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .istio_config import Fault

__all__ = ["FaultDecision", "FaultPolicy"]


@dataclass(frozen=True, slots=True)
class FaultDecision:
    delay: float | None = None          # seconds to hold the request (flag DI)
    abort_status: int | None = None     # answer locally with this status (flag FI)


NO_FAULT = FaultDecision()


class FaultPolicy:
    """As Istio: a fault without `percentage` never fires; delay and abort are decided independently."""

    __slots__ = ("abort_percent", "abort_status", "delay", "delay_percent", "rng")

    def __init__(self, fault: Fault, rng: random.Random) -> None:
        self.delay = fault.delay
        self.delay_percent = fault.delay_percent if fault.delay is not None else 0.0
        self.abort_status = fault.abort_status
        self.abort_percent = fault.abort_percent if fault.abort_status is not None else 0.0
        self.rng = rng

    def _fires(self, percent: float) -> bool:
        if percent <= 0.0:
            return False
        return percent >= 100.0 or self.rng.random() * 100.0 < percent

    def decide(self) -> FaultDecision:
        delay = self.delay if self._fires(self.delay_percent) else None
        abort = self.abort_status if self._fires(self.abort_percent) else None
        if delay is None and abort is None:
            return NO_FAULT
        return FaultDecision(delay, abort)
