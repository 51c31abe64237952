"""The peer-metadata header: round trips, defensive decoding and the environment precedence."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshtrace.proxy.hop import Workload
from meshtrace.proxy.peer import PEER_HEADER, decode_peer, encode_peer, workload_from_env

REVIEWS = Workload(workload="reviews-v2", namespace="default", app="reviews", version="v2", service="reviews",
                   canonical_service="reviews")


def test_header_name_is_lowercase() -> None:
    assert PEER_HEADER == "x-meshtrace-peer"


def test_encoding_is_compact_and_readable() -> None:
    assert encode_peer(REVIEWS) == ("workload=reviews-v2;namespace=default;app=reviews;version=v2;service=reviews;"
                                    "canonical_service=reviews")
    assert encode_peer(Workload()) == ""
    assert encode_peer(Workload(app="a")) == "app=a"


def test_round_trip_with_awkward_values() -> None:
    odd = Workload(workload="a;b=c", namespace="ns%20", app="ünï", principal="spiffe://cluster.local/ns/x/sa/y")
    encoded = encode_peer(odd)
    assert (encoded.count(";"), encoded.count("=")) == (3, 4)   # separators only
    assert encoded.isascii()
    assert decode_peer(encoded) == odd
    assert decode_peer(encoded.encode("ascii")) == odd


def test_decoding_returns_the_same_object_for_the_same_header() -> None:
    value = encode_peer(REVIEWS)
    assert decode_peer(value) is decode_peer(value)       # metrics hash an already-seen Workload


@pytest.mark.parametrize("bad", [
    None, "", b"", "workload", "=x", "workload=a;junk", "app=%ff%fe",   # no '=', empty name, invalid UTF-8
    "app=a%0Ab",                                                     # a control character after unescaping
    "app=" + "x" * 300,                                             # longer than any real name
    "app=a;" * 1500,                                                 # longer than any header we encode
    b"app=\xff",                                                     # not ASCII on the wire
])
def test_malformed_values_give_unknowns(bad: str | bytes | None) -> None:
    assert decode_peer(bad) == Workload()


def test_tolerant_parts() -> None:
    assert decode_peer(" app = reviews ; ; future_field=1 ") == Workload(app="reviews")
    assert decode_peer("app=first;app=second") == Workload(app="first")
    assert decode_peer("app=;version=v1") == Workload(version="v1")


@given(st.text(max_size=200))
def test_decode_never_raises(value: str) -> None:
    assert isinstance(decode_peer(value), Workload)


# Printable means not a control, format, surrogate, private-use, unassigned or separator character (space aside).
_printable = st.text(
    alphabet=st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"))
    | st.just(" "),
    min_size=1, max_size=60,
)


@given(st.builds(Workload, workload=_printable, namespace=_printable, app=_printable, version=_printable,
                 service=_printable, canonical_service=_printable, principal=_printable))
def test_round_trip_property(workload: Workload) -> None:
    assert decode_peer(encode_peer(workload)) == workload


_any_value = st.text(max_size=300)


@given(st.builds(Workload, workload=_any_value, namespace=_any_value, app=_any_value, version=_any_value,
                 service=_any_value, canonical_service=_any_value, principal=_any_value))
def test_encoding_never_loses_a_decodable_field(workload: Workload) -> None:
    """Whatever the encoder cannot carry becomes unknown on its own; the other fields still arrive intact."""
    decoded = decode_peer(encode_peer(workload))
    for name in ("workload", "namespace", "app", "version", "service", "canonical_service", "principal"):
        sent = getattr(workload, name)
        got = getattr(decoded, name)
        assert got in (sent, "unknown")
        if sent and sent.isprintable() and len(sent) <= 60:
            assert got == sent


def test_env_istio_style() -> None:
    env = {"ISTIO_META_WORKLOAD_NAME": "reviews-v2", "POD_NAMESPACE": "bookinfo", "SERVICE_NAME": "reviews",
           "SERVICE_VERSION": "v2"}
    assert workload_from_env(environ=env) == Workload(
        workload="reviews-v2", namespace="bookinfo", app="reviews", version="v2", service="reviews",
        canonical_service="reviews")


def test_env_meshtrace_variables_win() -> None:
    env = {"ISTIO_META_WORKLOAD_NAME": "w1", "MESHTRACE_WORKLOAD": "w2", "POD_NAMESPACE": "n1",
           "MESHTRACE_NAMESPACE": "n2", "APP": "a1", "MESHTRACE_APP": "a2", "VERSION": "v1",
           "MESHTRACE_VERSION": "v2"}
    got = workload_from_env("svc", environ=env)
    assert (got.workload, got.namespace, got.app, got.version, got.service) == ("w2", "n2", "a2", "v2", "svc")


def test_env_service_argument_and_fallbacks() -> None:
    got = workload_from_env("ratings", environ={"VERSION": "v1", "APP": "ignored"})
    assert got == Workload(workload="ratings-v1", namespace="unknown", app="ratings", version="v1",
                           service="ratings", canonical_service="ratings")
    assert workload_from_env(environ={"OTEL_SERVICE_NAME": "shop"}).app == "shop"
    assert workload_from_env(environ={"APP": "  "}) == Workload(canonical_service="unknown")
    assert workload_from_env(environ={}) == Workload()
