"""Retry policy of a route (`retries{attempts, perTryTimeout, retryOn}`): which outcomes retry, and the backoff.

`retryOn` as Envoy reads it: `5xx` = any 5xx response, a reset or a connect failure; `gateway-error` = 502, 503,
504 or a connect failure; `reset`; `connect-failure`; `retriable-4xx` = 409; bare codes such as `503`.
gRPC conditions (`unavailable`, `cancelled`, ...) and `refused-stream` (HTTP/2) never fire on HTTP/1.1.
Backoff is Envoy's: retry n waits a uniform random time in [0, (2^n - 1) x 25 ms], capped at 250 ms.
"""

from __future__ import annotations

import random

from .istio_config import Retries

__all__ = ["BACKOFF_BASE", "BACKOFF_CAP", "RetryPolicy"]

BACKOFF_BASE = 0.025
BACKOFF_CAP = 0.250


class RetryPolicy:
    __slots__ = ("any_5xx", "attempts", "connect_failure", "per_try_timeout", "reset", "rng", "statuses")

    def __init__(self, spec: Retries, rng: random.Random) -> None:
        on = set(spec.retry_on)
        self.attempts = spec.attempts
        self.per_try_timeout = spec.per_try_timeout
        self.rng = rng
        self.any_5xx = "5xx" in on
        statuses = {int(item) for item in on if item.isdigit()}
        if "gateway-error" in on:
            statuses |= {502, 503, 504}
        if "retriable-4xx" in on:
            statuses.add(409)
        self.statuses = frozenset(statuses)
        self.connect_failure = bool(on & {"connect-failure", "5xx", "gateway-error"})
        self.reset = bool(on & {"reset", "5xx"})

    def retriable_status(self, status: int) -> bool:
        return (self.any_5xx and status >= 500) or status in self.statuses

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1 for the first retry)."""
        upper = min(BACKOFF_BASE * ((1 << min(retry, 16)) - 1), BACKOFF_CAP)
        return self.rng.uniform(0.0, upper)
