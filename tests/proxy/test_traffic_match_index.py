"""The match index picks the same rule as trying every rule in order (Istio: first match wins), and so does a
naive reading of the spec; random rule sets over tiny alphabets, so rules collide and shadow each other."""

from __future__ import annotations

import random
import re
from typing import cast
from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from traffic_support import API, head

from meshtrace.proxy import routes
from meshtrace.proxy.istio_config import RequestMatch, StringMatch, parse_rules
from meshtrace.proxy.match_index import MatchTable
from meshtrace.proxy.routes import RuleRouter
from meshtrace.proxy.vs_match import RequestView

PATHS = ["/", "/a", "/a/b", "/A", "/b", "/ab"]
METHODS = ["GET", "POST", "get"]
AUTHORITIES = ["svc", "svc:80", "SVC", "other"]
VALUES = ["a", "b", "ab", ""]
HEADERS = ["x-a", "x-b", "X-A"]         # names in rules may be any case; requests carry them lower-case
REGEXES = ["a.*", "/a.*", "b|ab", ".*", "/[ab]"]


def string_match(values: list[str]) -> st.SearchStrategy[StringMatch]:
    return st.one_of(
        st.builds(StringMatch, st.just("exact"), st.sampled_from(values)),
        st.builds(StringMatch, st.just("prefix"), st.sampled_from([*values, "/", "a"])),
        st.builds(StringMatch, st.just("regex"), st.sampled_from(REGEXES)))


def named(values: list[str]) -> st.SearchStrategy[tuple[tuple[str, StringMatch | None], ...]]:
    pair = st.tuples(st.sampled_from(HEADERS), st.one_of(st.none(), string_match(values)))
    return st.lists(pair, max_size=2).map(tuple)     # X-A and x-a may both be there: both must hold


# Exact matches are the most likely, as in real configs and so that the index has something to dispatch on.
def field(values: list[str]) -> st.SearchStrategy[StringMatch | None]:
    return st.one_of(st.none(), st.builds(StringMatch, st.just("exact"), st.sampled_from(values)),
                     string_match(values))


request_match = st.builds(
    RequestMatch,
    uri=field(PATHS), authority=field(AUTHORITIES), method=field(METHODS),
    scheme=st.one_of(st.none(), st.just(StringMatch("exact", "http")), st.just(StringMatch("exact", "https"))),
    headers=named(VALUES), without_headers=named(VALUES),
    query_params=st.lists(st.tuples(st.sampled_from(["q", "r"]), st.one_of(st.none(), string_match(VALUES))),
                          max_size=1).map(tuple),
    ignore_uri_case=st.booleans())

rules = st.lists(st.lists(request_match, max_size=3), max_size=14)


@st.composite
def requests(draw: st.DrawFn) -> RequestView:
    query = draw(st.sampled_from(["", "q=a", "q=", "r=b&q=ab", "q"]))
    names = draw(st.lists(st.sampled_from(["x-a", "x-b"]), unique=True))
    hmap = {name.encode(): draw(st.sampled_from(VALUES)).encode() for name in names}
    return RequestView(draw(st.sampled_from(METHODS)).encode(), draw(st.sampled_from(PATHS)).encode(),
                       query.encode(), draw(st.sampled_from(AUTHORITIES)).encode(), b"http", hmap)


def holds(m: StringMatch, value: str, ignore_case: bool = False) -> bool:
    expected = m.value.lower() if ignore_case and m.kind != "regex" else m.value
    if ignore_case:
        value = value.lower()
    if m.kind == "exact":
        return value == expected
    if m.kind == "prefix":
        return value.startswith(expected)
    return re.fullmatch(expected, value, re.IGNORECASE if ignore_case else 0) is not None


def naive(spec: RequestMatch, view: RequestView) -> bool:
    """The spec read literally: every field present must hold."""
    text = {k.decode(): v.decode() for k, v in view.hmap.items()}
    query = dict(parse_qsl(view.query_text.decode(), keep_blank_values=True))
    fields = [(spec.uri, view.path.decode(), spec.ignore_uri_case), (spec.method, view.method.decode(), False),
              (spec.authority, view.authority.decode(), False), (spec.scheme, view.scheme.decode(), False)]
    if any(m is not None and not holds(m, value, case) for m, value, case in fields):
        return False
    for name, m in spec.headers:
        found = text.get(name.lower())
        if found is None or (m is not None and not holds(m, found)):
            return False
    for name, m in spec.without_headers:
        found = text.get(name.lower())
        if found is not None and (m is None or holds(m, found)):
            return False
    for name, m in spec.query_params:
        found = query.get(name)
        if found is None or (m is not None and not holds(m, found)):
            return False
    return True


def naive_first(specs: list[list[RequestMatch]], view: RequestView) -> int | None:
    return next((n for n, blocks in enumerate(specs) if not blocks or any(naive(b, view) for b in blocks)), None)


@settings(max_examples=400, deadline=None)
@given(rules, st.lists(requests(), min_size=1, max_size=8))
def test_indexed_linear_and_naive_matching_pick_the_same_rule_and_block(
        specs: list[list[RequestMatch]], views: list[RequestView]) -> None:
    table = MatchTable(list(enumerate(specs)))
    linear = MatchTable(list(enumerate(specs)), indexed=False)
    for view in views:
        hit, reference = table.first(view), linear.first(view)
        assert (hit[1:] if hit else None) == (reference[1:] if reference else None)
        assert (hit[1] if hit else None) == naive_first(specs, view)


def test_a_later_exact_rule_never_beats_an_earlier_prefix_regex_or_catch_all() -> None:
    x = (("x-route", StringMatch("exact", "r1")),)
    specs: list[list[RequestMatch]] = [
        [RequestMatch(headers=x, uri=StringMatch("exact", "/exact"))],
        [RequestMatch(uri=StringMatch("prefix", "/p"))],                    # no x-route: may hold for any value
        [RequestMatch(headers=x)],
        [RequestMatch(headers=(("x-route", StringMatch("regex", "r[0-9]")),))],
        [RequestMatch(headers=(("x-route", StringMatch("exact", "r2")),))],
        [],                                                                 # catch-all
        [RequestMatch(headers=(("x-route", StringMatch("exact", "r3")),))],  # unreachable
    ]
    table = MatchTable(list(enumerate(specs)))
    assert table.key == ("header", b"x-route")

    def first(path: str, value: str | None) -> int | None:
        hit = table.first(RequestView(b"GET", path.encode(), b"", b"svc", b"http",
                                      {b"x-route": value.encode()} if value is not None else {}))
        return hit[1] if hit else None
    assert [first("/exact", "r1"), first("/p", "r1"), first("/q", "r1"), first("/q", "r2"), first("/q", "r3"),
            first("/q", None), first("/p", None)] == [0, 1, 2, 3, 3, 5, 1]
    assert first("/q", "zz") == 5


def test_fifty_header_routes_each_reach_their_own_rule_through_the_router() -> None:
    http = "".join(f"  - match: [{{headers: {{x-route: {{exact: r{i}}}}}}}]\n"
                   f"    route: [{{destination: {{host: b{i}}}}}]\n" for i in range(50))
    vs = API + f"kind: VirtualService\nmetadata: {{name: bench}}\nspec:\n  hosts: [bench]\n  http:\n{http}"
    router = RuleRouter(parse_rules(vs, "rules.yaml"), set(), rng=random.Random(1))
    for i in (0, 17, 49):
        decision = router.route(head("/", host="bench:80", headers={"x-route": f"r{i}"}))
        assert decision is not None
        assert decision.route.host == f"b{i}"
    assert router.route(head("/", host="bench", headers={"x-route": "r50"})) is None
    assert router.route(head("/", host="bench")) is None
    described = cast("list[dict[str, object]]", router.describe()["virtual_services"])
    assert [vs["dispatched_on"] for vs in described] == ["header x-route"]     # what /config_dump shows


def test_a_header_named_twice_in_one_block_must_hold_both_ways() -> None:
    twice = RequestMatch(headers=(("X-Route", StringMatch("exact", "a")), ("x-route", StringMatch("exact", "b"))))
    once = RequestMatch(headers=(("x-route", StringMatch("exact", "a")),))
    other = RequestMatch(headers=(("x-route", StringMatch("exact", "c")),))
    table = MatchTable([(0, [twice]), (1, [once]), (2, [other])])
    assert table.key == ("header", b"x-route")
    hit = table.first(RequestView(b"GET", b"/", b"", b"svc", b"http", {b"x-route": b"a"}))
    assert hit is not None
    assert hit[1] == 1


def test_the_index_dispatches_on_the_field_that_splits_the_rules_finest() -> None:
    get = StringMatch("exact", "GET")
    specs = [[RequestMatch(method=get, headers=(("x-user", StringMatch("exact", f"u{i}")),))] for i in range(10)]
    table = MatchTable(list(enumerate(specs)))
    assert table.key == ("header", b"x-user")     # not the method every rule shares
    hit = table.first(RequestView(b"GET", b"/", b"", b"svc", b"http", {b"x-user": b"u9"}))
    assert hit is not None
    assert hit[1] == 9
    assert table.first(RequestView(b"POST", b"/", b"", b"svc", b"http", {b"x-user": b"u9"})) is None


def test_host_lookups_stay_right_past_the_cache_bound_and_own_listeners_get_no_route(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes, "MAX_CACHED_AUTHORITIES", 4)
    vs = API + ("kind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [reviews]\n  http:\n"
                "  - route: [{destination: {host: v1}}]\n")
    router = RuleRouter(parse_rules(vs, "rules.yaml"), {("127.0.0.1", 15001)}, rng=random.Random(1))
    for n in range(3):
        for host in ["reviews", "REVIEWS:80", "other:81", "127.0.0.1:15001", "a:b", "reviews"]:
            decision = router.route(head(f"/{n}", host=host))
            cluster = decision.route.cluster if decision is not None else None
            assert cluster == {"reviews": "outbound|80||v1", "REVIEWS:80": "outbound|80||v1",
                               "other:81": "outbound|81||other"}.get(host), host
    assert len(router._by_authority) <= 4
    absolute = router.route(head("http://reviews:80/x", host="ignored"))
    assert absolute is not None
    assert (absolute.route.cluster, absolute.target, absolute.rewrite_host) == ("outbound|80||v1", b"/x", True)


def test_ignore_uri_case_rules_see_the_path_lowered_and_the_rest_as_sent() -> None:
    specs = [[RequestMatch(uri=StringMatch("exact", "/Shop"), ignore_uri_case=True,
                           headers=(("x-v", StringMatch("exact", "B")),))],
             [RequestMatch(uri=StringMatch("regex", "/shop/[a-z]+"), ignore_uri_case=True)],
             [RequestMatch(uri=StringMatch("prefix", "/SHOP"))]]
    table = MatchTable(list(enumerate(specs)))

    def first(path: bytes, hmap: dict[bytes, bytes]) -> int | None:
        hit = table.first(RequestView(b"GET", path, b"", b"svc", b"http", hmap))
        return hit[1] if hit else None
    assert first(b"/sHoP", {b"x-v": b"B"}) == 0
    assert first(b"/sHoP", {b"x-v": b"b"}) is None          # header values keep their case
    assert first(b"/SHOP/ITEM", {}) == 1
    assert first(b"/SHOP/42", {}) == 2
