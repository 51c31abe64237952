"""In-process routing microbenchmark (a script, not a test): the cost of one outbound routing decision.

Run: `.venv/bin/python tests/bench/bench_routing.py [--rounds 7]`. It times `route(head, peer)` on the same two
configurations as the wrk benchmark's last two rows (tests/bench/bench_proxy.py), in the same process and run:
the plain outbound router with no rules, and a RuleRouter built from bench_proxy's `routes_yaml()` (a ServiceEntry
and one VirtualService of 50 header-matched routes) with the request matching the last route, the worst case for
a linear walk. Each figure is the best of `--rounds` timeit repeats (the least disturbed by other processes on the
machine), and the last line gives their ratio. `--linear` also times the same rules without the match index, to see
what the index is worth.
"""

from __future__ import annotations

import argparse
import random
import sys
import timeit
from collections.abc import Callable

# The very route config the wrk benchmark loads (this directory is sys.path[0] when the script runs).
from bench_proxy import ROUTES, routes_yaml

from meshtrace.proxy.codec import RequestHead
from meshtrace.proxy.istio_config import parse_rules
from meshtrace.proxy.router import OutboundRouter
from meshtrace.proxy.routes import RuleRouter

UPSTREAM_PORT = 8080


def head(host: bytes, extra: list[tuple[bytes, bytes]]) -> RequestHead:
    pairs = [(b"host", host), (b"user-agent", b"wrk"), (b"accept", b"*/*"), *extra]
    return RequestHead(b"GET", b"/", b"1.1", pairs, hmap=dict(pairs), keep_alive=True, upgrade=False)


def best_us(call: Callable[[], object], rounds: int, number: int = 20000) -> float:
    return min(timeit.repeat(call, number=number, repeat=rounds)) / number * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=7, help="timeit repeats; the best one counts")
    parser.add_argument("--linear", action="store_true", help="also time the rules without the match index")
    args = parser.parse_args()
    count = ROUTES
    rules = parse_rules(routes_yaml(count, UPSTREAM_PORT), "bench.yaml")

    plain = OutboundRouter(set())
    plain_head = head(b"127.0.0.1:%d" % UPSTREAM_PORT, [])
    routed = RuleRouter(rules, set(), rng=random.Random(1))
    routed_head = head(b"bench:80", [(b"x-route", b"r%d" % (count - 1))])
    decision = routed.route(routed_head, "127.0.0.1:5000")
    assert decision is not None
    assert decision.route.name == f"bench.{count - 1}", decision

    rows = [("outbound, no rules", best_us(lambda: plain.route(plain_head, "127.0.0.1:5000"), args.rounds)),
            (f"outbound, {count} routes", best_us(lambda: routed.route(routed_head, "127.0.0.1:5000"), args.rounds))]
    if args.linear:
        linear = RuleRouter(rules, set(), rng=random.Random(1), indexed=False)
        rows.append((f"outbound, {count} routes, linear",
                     best_us(lambda: linear.route(routed_head, "127.0.0.1:5000"), args.rounds)))
    for name, us in rows:
        print(f"{name:<34} {us:>7.2f} us/decision")
    print(f"{rows[1][0]} / {rows[0][0]}: {rows[1][1] / rows[0][1]:.2f}x the plain routing cost")
    return 0


if __name__ == "__main__":
    sys.exit(main())
