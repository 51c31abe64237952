"""Outlier detection (DestinationRule `outlierDetection`) for one cluster, with an injected clock.

Theory of operation, as Envoy's consecutive-error detectors:
- `record(host, status)` after each try: `status` is the response status, or 0 for a connect failure or a reset
  before the response (a locally originated failure, which counts as a gateway error and as a 5xx). A 5xx adds
  to the host's `consecutive5xxErrors` run, 502/503/504 and 0 to its `consecutiveGatewayErrors` run; anything
  else ends both runs. A run reaching its threshold (0: that detector is off) ejects the host at once,
  unless `maxEjectionPercent` of the cluster is already ejected (Envoy's rule: ejected * 100 / hosts must be
  below it, so one host can always go).
- Every `interval` (checked lazily on the next call, so no timer runs) hosts whose ejection time is over come
  back; an ejection lasts `baseEjectionTime` x the times the host was ejected, and each interval a host spends
  back in service lowers that multiplier by one again.
- `healthy()` gives the hosts the balancer may choose from; if fewer than `minHealthPercent` of them are
  healthy, detection is bypassed and all hosts are used (Istio). Empty: 503 `UH`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .balancer import Host
from .istio_config import OutlierPolicy

__all__ = ["OutlierDetector"]

_GATEWAY = frozenset({0, 502, 503, 504})


class _State:
    __slots__ = ("ejected_until", "ejections", "gateway_run", "run_5xx")

    def __init__(self) -> None:
        self.run_5xx = 0
        self.gateway_run = 0
        self.ejections = 0
        self.ejected_until: float | None = None


class OutlierDetector:
    __slots__ = ("_healthy", "clock", "hosts", "next_tick", "policy", "state")

    def __init__(self, policy: OutlierPolicy, hosts: Sequence[Host], clock: Callable[[], float]) -> None:
        self.policy = policy
        self.hosts = list(hosts)
        self.clock = clock
        self.state = {id(h): _State() for h in self.hosts}
        self.next_tick = clock() + policy.interval
        self._healthy: list[Host] = list(self.hosts)

    def _tick(self, now: float) -> None:
        if now < self.next_tick:
            return
        interval = self.policy.interval or 1.0
        self.next_tick = now + interval
        changed = False
        for host in self.hosts:
            st = self.state[id(host)]
            if st.ejected_until is not None:
                if now >= st.ejected_until:
                    st.ejected_until = None
                    st.run_5xx = st.gateway_run = 0
                    changed = True
            elif st.ejections:
                st.ejections -= 1
        if changed:
            self._refresh()

    def _refresh(self) -> None:
        self._healthy = [h for h in self.hosts if self.state[id(h)].ejected_until is None]

    @property
    def ejected(self) -> int:
        return len(self.hosts) - len(self._healthy)

    def healthy(self) -> list[Host]:
        self._tick(self.clock())
        healthy = self._healthy
        if len(healthy) * 100.0 < self.policy.min_health_percent * len(self.hosts):
            return self.hosts          # too few left: detection is bypassed (minHealthPercent)
        return healthy

    def record(self, host: Host, status: int) -> None:
        st = self.state.get(id(host))
        if st is None:
            return
        now = self.clock()
        self._tick(now)
        policy = self.policy
        if status >= 500 or status == 0:
            st.run_5xx += 1
            if status in _GATEWAY:
                st.gateway_run += 1
            else:
                st.gateway_run = 0
        else:
            st.run_5xx = st.gateway_run = 0
            return
        if st.ejected_until is not None:
            return
        if ((policy.consecutive_5xx_errors and st.run_5xx >= policy.consecutive_5xx_errors)
                or (policy.consecutive_gateway_errors and st.gateway_run >= policy.consecutive_gateway_errors)):
            if self.ejected * 100.0 >= policy.max_ejection_percent * len(self.hosts):
                return
            st.ejections += 1
            st.ejected_until = now + policy.base_ejection_time * st.ejections
            st.run_5xx = st.gateway_run = 0
            self._refresh()

    def describe(self) -> dict[str, object]:
        now = self.clock()
        return {f"{h.address}:{h.port}": {
            "ejected_for": round(max(0.0, st.ejected_until - now), 3) if st.ejected_until is not None else None,
            "ejections": st.ejections, "consecutive_5xx": st.run_5xx, "consecutive_gateway": st.gateway_run}
            for h in self.hosts for st in (self.state[id(h)],)}
