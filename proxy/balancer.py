"""Load balancers over a cluster's hosts: ROUND_ROBIN, RANDOM, LEAST_REQUEST and consistentHash (ring hash).

Plain objects with an injected RNG; `choose(hosts, key)` gets the currently healthy hosts (outlier detection
may have removed some) and, for consistent hashing, the request's hash key (None: no key, pick at random).
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Sequence
from typing import Protocol

__all__ = ["Balancer", "ConsistentHashBalancer", "Host", "LeastRequestBalancer", "RandomBalancer",
           "RoundRobinBalancer", "make_balancer"]


class Host:
    """One upstream endpoint of a cluster, with the in-flight count LEAST_REQUEST reads."""

    __slots__ = ("active", "address", "labels", "port")

    def __init__(self, address: str, port: int, labels: tuple[tuple[str, str], ...] = ()) -> None:
        self.address = address
        self.port = port
        self.labels = labels
        self.active = 0

    def __repr__(self) -> str:
        return f"Host({self.address}:{self.port})"


class Balancer(Protocol):
    def choose(self, hosts: Sequence[Host], key: bytes | None = None) -> Host: ...


class RoundRobinBalancer:
    __slots__ = ("_next",)

    def __init__(self, rng: random.Random) -> None:
        self._next = rng.randrange(1 << 16)       # as Envoy: start at a random offset so sidecars spread

    def choose(self, hosts: Sequence[Host], key: bytes | None = None) -> Host:
        index = self._next % len(hosts)
        self._next += 1
        return hosts[index]


class RandomBalancer:
    __slots__ = ("_rng",)

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def choose(self, hosts: Sequence[Host], key: bytes | None = None) -> Host:
        return hosts[self._rng.randrange(len(hosts))]


class LeastRequestBalancer:
    """Envoy's default for LEAST_REQUEST: power of two choices, the one with fewer requests in flight wins."""

    __slots__ = ("_rng",)

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def choose(self, hosts: Sequence[Host], key: bytes | None = None) -> Host:
        if len(hosts) == 1:
            return hosts[0]
        a, b = self._rng.sample(range(len(hosts)), 2)
        return hosts[a] if hosts[a].active <= hosts[b].active else hosts[b]


def _hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class ConsistentHashBalancer:
    """A ring of `replicas` points per host; a key maps to the next point clockwise.

    The ring is rebuilt only when the host set changes (cached by the tuple of hosts), so the same key keeps
    the same host while the set is stable, and an ejection moves only the keys of the ejected host.
    """

    __slots__ = ("_fallback", "_hosts", "_points", "_ring", "replicas")

    def __init__(self, rng: random.Random, replicas: int = 64) -> None:
        self.replicas = replicas
        self._fallback = RandomBalancer(rng)
        self._hosts: tuple[Host, ...] = ()
        self._points: list[int] = []
        self._ring: list[Host] = []

    def _build(self, hosts: tuple[Host, ...]) -> None:
        ring = sorted((_hash64(b"%s:%d#%d" % (h.address.encode(), h.port, i)), n)
                      for n, h in enumerate(hosts) for i in range(self.replicas))
        self._points = [point for point, _ in ring]
        self._ring = [hosts[n] for _, n in ring]
        self._hosts = hosts

    def choose(self, hosts: Sequence[Host], key: bytes | None = None) -> Host:
        if key is None:
            return self._fallback.choose(hosts)
        current = tuple(hosts)
        if current != self._hosts:
            self._build(current)
        index = bisect.bisect_left(self._points, _hash64(key))
        return self._ring[index % len(self._ring)]


def make_balancer(simple: str, consistent: bool, rng: random.Random) -> Balancer:
    if consistent:
        return ConsistentHashBalancer(rng)
    if simple == "RANDOM":
        return RandomBalancer(rng)
    if simple == "LEAST_REQUEST":
        return LeastRequestBalancer(rng)
    return RoundRobinBalancer(rng)
