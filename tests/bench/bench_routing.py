"""In-process routing microbenchmark (a script, not a test): the cost of one outbound routing decision.

Run: `.venv/bin/python tests/bench/bench_routing.py [--rounds 7]`. It times `route(head, peer)` on the same two
configurations as the wrk benchmark's last two rows (tests/bench/bench_proxy.py), in the same process and run:
the plain outbound router with no rules, and a RuleRouter built from bench_proxy's `routes_yaml()` (a ServiceEntry
and one VirtualService of 50 header-matched routes) with the request matching the last route, the worst case for
a linear walk. Each figure is the best of `--rounds` timeit repeats (the least disturbed by other processes on the
machine), and the last line gives their ratio. `--linear` also times the same rules without the match index, to see
what the index is worth.
`--callgrind` counts instructions per decision instead, under `valgrind --tool=callgrind`: each configuration runs
2000 and 12000 decisions in a child process (set-up objects frozen out of the collector, as the sidecar runs) and
the difference is divided by 10000 (set-up and start-up cancel out), deterministic to a few instructions on a busy
machine where the timings are not.
"""

from __future__ import annotations

import argparse
import gc
import random
import shutil
import sys
import timeit
from collections.abc import Callable

# The very route config the wrk benchmark loads (this directory is sys.path[0] when the script runs).
from bench_proxy import ROUTES, routes_yaml
from benchkit import instructions

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


def decisions() -> dict[str, Callable[[], object]]:
    """One routing decision per configuration, checked once: name -> a call making it."""
    count = ROUTES
    rules = parse_rules(routes_yaml(count, UPSTREAM_PORT), "bench.yaml")
    plain = OutboundRouter(set())
    plain_head = head(b"127.0.0.1:%d" % UPSTREAM_PORT, [])
    routed = RuleRouter(rules, set(), rng=random.Random(1))
    linear = RuleRouter(rules, set(), rng=random.Random(1), indexed=False)
    routed_head = head(b"bench:80", [(b"x-route", b"r%d" % (count - 1))])
    for router in (routed, linear):
        decision = router.route(routed_head, "127.0.0.1:5000")
        assert decision is not None
        assert decision.route.name == f"bench.{count - 1}", decision
    return {"outbound, no rules": lambda: plain.route(plain_head, "127.0.0.1:5000"),
            f"outbound, {count} routes": lambda: routed.route(routed_head, "127.0.0.1:5000"),
            f"outbound, {count} routes, linear": lambda: linear.route(routed_head, "127.0.0.1:5000")}


def _run(name: str, count: int) -> int:
    """The child process under callgrind: `count` decisions of one configuration."""
    call = decisions()[name]
    # As the sidecar runs: the set-up's objects frozen out of the collector, or a full collection of them
    # falling in one run and not the other swamps the difference (thousands of instructions per decision).
    gc.collect()
    gc.freeze()
    for _ in range(count):
        call()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=7, help="timeit repeats; the best one counts")
    parser.add_argument("--linear", action="store_true", help="also time the rules without the match index")
    parser.add_argument("--callgrind", action="store_true", help="instructions per decision (needs valgrind)")
    parser.add_argument("--run", nargs=2, metavar=("NAME", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run is not None:
        return _run(args.run[0], int(args.run[1]))
    calls = decisions()
    names = list(calls)[:3 if args.linear else 2]
    if args.callgrind:
        if shutil.which("valgrind") is None:
            raise SystemExit("valgrind is not installed")
        unit = "instructions/decision"
        rows = [(name, (instructions(__file__, ["--run", name, "12000"])
                        - instructions(__file__, ["--run", name, "2000"])) / 10000) for name in names]
    else:
        unit = "us/decision"
        rows = [(name, best_us(calls[name], args.rounds)) for name in names]
    for name, cost in rows:
        print(f"{name:<34} {cost:>9.2f} {unit}")
    print(f"{rows[1][0]} / {rows[0][0]}: {rows[1][1] / rows[0][1]:.2f}x the plain routing cost")
    return 0


if __name__ == "__main__":
    sys.exit(main())
