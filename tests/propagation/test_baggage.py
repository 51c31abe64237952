"""W3C baggage: valid and invalid members, the 180-member / 8192-byte limits, unchanged propagation."""

from __future__ import annotations

import pytest
from opentelemetry import baggage
from opentelemetry.context import Context

from meshtrace.propagation import BaggagePropagator

BAGGAGE = BaggagePropagator()


def extracted(value: str | list[str]) -> dict[str, object]:
    return dict(baggage.get_all(BAGGAGE.extract({"baggage": value})))


def round_trip(value: str | list[str]) -> str | None:
    carrier: dict[str, str] = {}
    BAGGAGE.inject(carrier, BAGGAGE.extract({"Baggage": value}))
    return carrier.get("baggage")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("key1=value1,key2=value2", {"key1": "value1", "key2": "value2"}),
        ("key1 = value1 , key2\t=\tvalue2", {"key1": "value1", "key2": "value2"}),
        ("key1=value1;prop1;prop2=v,key2=value2", {"key1": "value1", "key2": "value2"}),
        ("key1=val%20ue%2C1", {"key1": "val ue,1"}),
        ("key1=a+b", {"key1": "a+b"}),  # '+' is a literal in baggage, not a space
        ("key1=%E2%82%AC", {"key1": "\u20ac"}),
        ("key1=", {"key1": ""}),
        ("key1=1,key1=2", {"key1": "2"}),
        (["key1=1", "key2=2"], {"key1": "1", "key2": "2"}),  # several headers are one list
        ("bad key=1,key2=2", {"key2": "2"}),  # an invalid member is skipped, the rest kept
        ("key1,key2=2", {"key2": "2"}),
        ("key1=a b,key2=2", {"key2": "2"}),
        ('key1="x",key2=2', {"key2": "2"}),
        ("key1=x;,key2=2", {"key2": "2"}),
        ("key1=x;p=a b,key2=2", {"key2": "2"}),
        ("key1=%FF,key2=2", {"key2": "2"}),  # not UTF-8 once decoded
        ("k\u00e9y=1,key2=2", {"key2": "2"}),
        (",,key2=2,", {"key2": "2"}),
    ],
)
def test_extract(value: str | list[str], expected: dict[str, object]) -> None:
    assert extracted(value) == expected


def test_member_limit() -> None:
    value = ",".join(f"k{i}=v" for i in range(200))
    found = extracted(value)
    assert len(found) == 180
    assert "k179" in found
    assert "k180" not in found


def test_byte_limit() -> None:
    members = [f"k{i}={'v' * 1000}" for i in range(10)]  # 1004 bytes each with its comma
    found = extracted(",".join(members))
    assert len(found) == 8  # 8 * 1003 + 7 = 8031 <= 8192; a ninth would exceed
    written = round_trip(",".join(members))
    assert written is not None
    assert len(written.encode()) <= 8192


@pytest.mark.parametrize(
    "value",
    [
        "key1=value1;prop1;prop2=v,key2=value2",
        "key1=val%20ue,key2=%41",  # the original encoding is kept, even where it was not needed
        "key1=a+b;p = q",
        "key1=",
    ],
)
def test_propagated_unchanged(value: str) -> None:
    assert round_trip(value) == value


def test_changed_value_is_reencoded_without_stale_properties() -> None:
    context = BAGGAGE.extract({"baggage": "key1=old;prop,key2=same;p2"})
    context = baggage.set_baggage("key1", "new value, \u20ac", context)
    context = baggage.set_baggage("key3", 42, context)
    carrier: dict[str, str] = {}
    BAGGAGE.inject(carrier, context)
    assert carrier == {"baggage": "key1=new%20value%2C%20%E2%82%AC,key2=same;p2,key3=42"}


def test_inject_skips_keys_that_are_not_tokens_and_writes_nothing_when_empty() -> None:
    carrier: dict[str, str] = {}
    BAGGAGE.inject(carrier, baggage.set_baggage("no good", "x", Context()))
    assert carrier == {}
    BAGGAGE.inject(carrier, Context())
    assert carrier == {}


def test_huge_header_is_ignored() -> None:
    assert extracted("k=v," * 100_000) == {}
