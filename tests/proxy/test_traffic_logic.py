"""Traffic rules without sockets: matching, first-match order, rewrites, splits, balancers, faults (seeded RNG)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from typing import cast

import pytest
from traffic_support import API, head, service_entry, subsets_rule

from meshtrace.proxy.balancer import (
    ConsistentHashBalancer,
    Host,
    LeastRequestBalancer,
    RandomBalancer,
    RoundRobinBalancer,
)
from meshtrace.proxy.codec import RequestHead
from meshtrace.proxy.fault import FaultPolicy
from meshtrace.proxy.istio_config import Fault, parse_rules
from meshtrace.proxy.routes import RuleRouter
from meshtrace.proxy.split import WeightedChoice

VS = API + "kind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews, '*.shop.local']\n  http:\n"


def router(http: str, *extra: str, seed: int = 1) -> RuleRouter:
    docs = [VS + http, *extra]
    return RuleRouter(parse_rules("---\n".join(docs), "rules.yaml"), set(), rng=random.Random(seed))


def routed(r: RuleRouter, *args: object, **kwargs: object) -> tuple[str, str, str]:
    decision = r.route(head(*args, **kwargs))  # type: ignore[arg-type]
    assert decision is not None
    return decision.route.name, decision.target.decode(), decision.route.host


MATCHES = """\
  - name: exact
    match: [{uri: {exact: /exact}}]
    route: [{destination: {host: a}}]
  - name: jason
    match: [{headers: {end-user: {exact: jason}}, uri: {prefix: /api}}]
    route: [{destination: {host: b}}]
  - name: regex
    match: [{uri: {regex: '/items/[0-9]+'}}]
    route: [{destination: {host: c}}]
  - name: nocase
    match: [{uri: {prefix: /Case}, ignoreUriCase: true}]
    route: [{destination: {host: d}}]
  - name: post-or-debug
    match: [{method: {exact: POST}}, {queryParams: {debug: {regex: '1|true'}}}]
    route: [{destination: {host: e}}]
  - name: canary-header-absent
    match: [{uri: {prefix: /w}, withoutHeaders: {x-canary: {}}}]
    route: [{destination: {host: f}}]
  - name: authority
    match: [{authority: {prefix: api.shop}}]
    route: [{destination: {host: g}}]
"""


@pytest.mark.parametrize(("args", "kwargs", "expected"), [
    (("/exact",), {}, "reviews.exact"),
    (("/exact/more",), {}, None),
    (("/exact?x=1",), {}, "reviews.exact"),                      # the query is not part of the path
    (("/api/x",), {"headers": {"end-user": "jason"}}, "reviews.jason"),
    (("/api/x",), {"headers": {"end-user": "jasonx"}}, None),
    (("/items/42",), {}, "reviews.regex"),
    (("/items/42x",), {}, None),                                 # regex is a full match (RE2 in Istio)
    (("/cASe/1",), {}, "reviews.nocase"),
    (("/z",), {"method": "POST"}, "reviews.post-or-debug"),     # match blocks are OR-ed
    (("/z?debug=true",), {}, "reviews.post-or-debug"),
    (("/z?debug=truex",), {}, None),
    (("/w",), {}, "reviews.canary-header-absent"),
    (("/w",), {"headers": {"x-canary": "1"}}, None),
    (("/q",), {"host": "api.shop.local"}, "reviews.authority"),  # wildcard VirtualService host
])
def test_first_matching_rule_wins(args: tuple[str], kwargs: dict[str, object], expected: str | None) -> None:
    r = router(MATCHES)
    decision = r.route(head(*args, **kwargs))  # type: ignore[arg-type]
    assert (decision.route.name if decision is not None else None) == expected


def test_no_rule_matching_a_named_host_is_no_route_and_unnamed_hosts_pass_through() -> None:
    r = router(MATCHES)
    assert r.route(head("/nothing")) is None
    decision = r.route(head("/nothing", host="other:8080"))
    assert decision is not None
    assert decision.route.cluster == "outbound|8080||other"


def test_rewrite_replaces_the_matched_prefix_and_keeps_the_query() -> None:
    r = router("""\
  - match: [{uri: {prefix: /old}}]
    rewrite: {uri: /new, authority: internal}
    route: [{destination: {host: a}}]
  - match: [{uri: {exact: /x}}]
    rewrite: {uri: /y}
    route: [{destination: {host: a}}]
""")
    decision = r.route(head("/old/page?q=1"))
    assert decision is not None
    assert decision.target == b"/new/page?q=1"
    assert decision.authority == b"internal"
    assert decision.rewrite_host
    decision = r.route(head("/x"))
    assert decision is not None
    assert decision.target == b"/y"
    assert not decision.rewrite_host


def test_subsets_resolve_service_entry_endpoints_by_labels() -> None:
    r = router("  - route: [{destination: {host: reviews, subset: v2}}]\n",
               service_entry("reviews", [("127.0.0.1", 9001, "v1"), ("127.0.0.2", 9002, "v2"),
                                         ("127.0.0.3", 9003, "v2")]),
               subsets_rule("reviews", ["v1", "v2"]))
    seen = Counter(routed(r, "/")[2] for _ in range(100))
    assert seen == {"127.0.0.2": 50, "127.0.0.3": 50}          # ROUND_ROBIN over the v2 endpoints only
    decision = r.route(head("/"))
    assert decision is not None
    assert decision.route.cluster == "outbound|80|v2|reviews"
    assert decision.route.port in (9002, 9003)


def test_a_subset_without_endpoints_has_no_healthy_host() -> None:
    r = router("  - route: [{destination: {host: reviews, subset: v3}}]\n",
               service_entry("reviews", [("127.0.0.1", 9001, "v1")]), subsets_rule("reviews", ["v1", "v3"]))
    decision = r.route(head("/"))
    assert decision is not None
    assert decision.no_host


def test_one_percent_canary_within_tolerance() -> None:
    r = router("""\
  - route:
    - {destination: {host: stable}, weight: 99}
    - {destination: {host: canary}, weight: 1}
""", seed=7)
    picks = Counter(routed(r, "/")[2] for _ in range(100_000))
    # binomial(100000, 0.01): sd ~ 31; 5 sd either side
    assert 1000 - 160 < picks["canary"] < 1000 + 160
    assert picks["stable"] + picks["canary"] == 100_000


def test_weighted_choice_exact_proportions_and_zero_weights() -> None:
    choice = WeightedChoice(["a", "b", "c"], [50, 0, 50], random.Random(3))
    counts = Counter(choice.pick() for _ in range(20_000))
    assert set(counts) == {"a", "c"}
    assert abs(counts["a"] - 10_000) < 500
    assert WeightedChoice(["only"], [0], random.Random()).pick() == "only"      # a single route needs no weight
    with pytest.raises(ValueError, match="all weights are 0"):
        WeightedChoice(["a", "b"], [0, 0], random.Random())


def test_header_edits_merge_rule_and_destination_levels() -> None:
    r = router("""\
  - headers:
      request: {set: {x-a: rule, x-keep: k}, add: {x-b: "1"}, remove: [x-c]}
      response: {set: {x-served-by: rule}}
    route:
    - destination: {host: a}
      headers: {request: {set: {x-a: dest}}}
""")
    decision = r.route(head("/"))
    assert decision is not None
    assert decision.policy is not None
    out = decision.policy.request_headers.apply([(b"x-a", b"old"), (b"x-c", b"gone"), (b"x-b", b"0")])
    assert out == [(b"x-b", b"0"), (b"x-keep", b"k"), (b"x-a", b"dest"), (b"x-b", b"1")]
    assert decision.policy.response_headers.apply([]) == [(b"x-served-by", b"rule")]


def test_fault_route_neither_retries_nor_times_out() -> None:
    r = router("""\
  - fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    timeout: 1s
    retries: {attempts: 3}
    route: [{destination: {host: a}}]
""")
    decision = r.route(head("/"))
    assert decision is not None
    assert decision.policy is not None
    assert decision.route.timeout is None
    assert decision.policy.retries is None
    assert decision.policy.fault is not None
    assert decision.policy.fault.decide().abort_status == 418


def test_fault_percentages() -> None:
    rng = random.Random(11)
    policy = FaultPolicy(Fault(delay=0.5, delay_percent=10.0, abort_status=503, abort_percent=0.0), rng)
    decisions = [policy.decide() for _ in range(50_000)]
    delayed = sum(d.delay == 0.5 for d in decisions)
    assert 5000 - 350 < delayed < 5000 + 350
    assert not any(d.abort_status for d in decisions)          # no percentage: never
    always = FaultPolicy(Fault(abort_status=500, abort_percent=100.0), rng)
    assert all(always.decide().abort_status == 500 for _ in range(100))


HOSTS = [Host(f"10.0.0.{i}", 80) for i in range(5)]


def test_round_robin_and_random_spread() -> None:
    rr = RoundRobinBalancer(random.Random(1))
    assert Counter(rr.choose(HOSTS).address for _ in range(50)) == {h.address: 10 for h in HOSTS}
    rnd = RandomBalancer(random.Random(1))
    counts = Counter(rnd.choose(HOSTS).address for _ in range(10_000))
    assert all(1800 < n < 2200 for n in counts.values())


def test_least_request_prefers_idle_hosts() -> None:
    hosts = [Host("busy", 80), Host("idle", 80)]
    hosts[0].active = 10
    lr = LeastRequestBalancer(random.Random(1))
    assert {lr.choose(hosts).address for _ in range(100)} == {"idle"}


def test_consistent_hash_keeps_keys_while_hosts_are_stable_and_moves_few_on_removal() -> None:
    ch = ConsistentHashBalancer(random.Random(1))
    keys = [f"user-{i}".encode() for i in range(1000)]
    first = {k: ch.choose(HOSTS, k) for k in keys}
    assert all(ch.choose(HOSTS, k) is first[k] for k in keys)
    assert len({h.address for h in first.values()}) == 5
    fewer = HOSTS[:4]
    moved = [k for k in keys if first[k] is not HOSTS[4] and ch.choose(fewer, k) is not first[k]]
    assert moved == []                                         # only the removed host's keys move


def test_consistent_hash_keys_from_header_cookie_query_and_source_ip() -> None:
    endpoints = [(f"127.0.0.{i}", 9000 + i, "v1") for i in range(1, 9)]
    for hash_spec, make in [
        ("{httpHeaderName: x-user}", lambda u: head("/", headers={"x-user": u})),
        ("{httpCookie: {name: user, ttl: 0s}}", lambda u: head("/", headers={"cookie": f"a=b; user={u}"})),
        ("{httpQueryParameterName: u}", lambda u: head(f"/?u={u}")),
    ]:
        make = cast(Callable[[str], RequestHead], make)
        r = router("  - route: [{destination: {host: reviews}}]\n", service_entry("reviews", endpoints),
                   subsets_rule("reviews", ["v1"], f"{{loadBalancer: {{consistentHash: {hash_spec}}}}}"))
        for user in ("alice", "bob", "carol"):
            chosen = {r.route(make(user)).route.host for _ in range(20)}  # type: ignore[union-attr]
            assert len(chosen) == 1, hash_spec
    r = router("  - route: [{destination: {host: reviews}}]\n", service_entry("reviews", endpoints),
               subsets_rule("reviews", ["v1"], "{loadBalancer: {consistentHash: {useSourceIp: true}}}"))
    chosen = {r.route(head("/"), "10.1.1.1:5555").route.host for _ in range(20)}  # type: ignore[union-attr]
    chosen |= {r.route(head("/"), "10.1.1.1:6666").route.host for _ in range(20)}  # type: ignore[union-attr]
    assert len(chosen) == 1
