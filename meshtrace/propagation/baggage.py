"""W3C `baggage`, passed on byte for byte (properties included) while the application leaves it alone."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final
from urllib.parse import quote, unquote

from opentelemetry import baggage as otel_baggage
from opentelemetry.context import Context, create_key, get_value, set_value

from meshtrace.propagation._common import FormatPropagator, Headers, Outgoing

__all__ = ["BaggagePropagator"]

HEADER: Final = "baggage"
MAX_ENTRIES: Final = 180
MAX_BYTES: Final = 8192
_MAX_SCAN: Final = 8 * MAX_BYTES  # a longer header is abuse, not baggage: ignore it without parsing

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_OCTETS = r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*"
_KEY = re.compile(_TOKEN)
_VALUE = re.compile(_OCTETS)
_PROPERTY = re.compile(rf"{_TOKEN}(?:[ \t]*=[ \t]*{_OCTETS})?")
# Characters a value may carry unencoded: every baggage-octet except "%", which starts an escape.
_SAFE: Final = "!#$&'()*+-./:<=>?@[]^_`{|}~"

# OTel baggage holds a name and a value only. To pass members on unchanged (their properties, their
# original percent-encoding), the raw member text is remembered next to the decoded value, and reused on
# inject while the application has not changed that value.
_RAW = create_key("meshtrace-baggage-raw")


def _parse_member(member: str) -> tuple[str, str] | None:
    head, *properties = member.split(";")
    key, sep, value = head.partition("=")
    key = key.strip(" \t")
    value = value.strip(" \t")
    if not sep or _KEY.fullmatch(key) is None or _VALUE.fullmatch(value) is None:
        return None
    for prop in properties:
        if _PROPERTY.fullmatch(prop.strip(" \t")) is None:
            return None
    try:
        return key, unquote(value, errors="strict")
    except UnicodeDecodeError:
        return None


def parse(headers: Headers) -> list[tuple[str, str, str]]:
    """(key, decoded value, raw member) for each valid member, within the W3C limits; invalid ones skipped."""
    values = headers.values(HEADER)
    if not values:
        return []
    header = ",".join(values)  # several baggage headers are one list (RFC 9110 §5.3)
    if len(header) > _MAX_SCAN:
        return []
    found: list[tuple[str, str, str]] = []
    total = 0
    for raw in header.split(","):
        member = raw.strip(" \t")
        if not member:
            continue
        parsed = _parse_member(member)
        if parsed is None:
            continue
        size = len(member) + (1 if found else 0)  # the member is ASCII: characters are bytes
        if total + size > MAX_BYTES:
            continue
        total += size
        found.append((*parsed, member))
        if len(found) == MAX_ENTRIES:
            break
    return found


def extract(headers: Headers, context: Context) -> Context:
    return apply(parse(headers), context)


def apply(members: list[tuple[str, str, str]], context: Context) -> Context:
    """Put parsed members into the context's baggage, remembering their raw text."""
    if not members:
        return context
    raw: dict[str, tuple[str, str]] = {}
    for key, value, member in members:
        context = otel_baggage.set_baggage(key, value, context)
        raw[key] = (value, member)
    return set_value(_RAW, raw, context)


def render(out: Outgoing) -> Iterator[tuple[str, str]]:
    entries = out.baggage
    if not entries:
        return
    remembered = get_value(_RAW, out.context)
    raw: dict[str, tuple[str, str]] = remembered if isinstance(remembered, dict) else {}
    members: list[str] = []
    total = 0
    for key, value in entries.items():
        known = raw.get(key)
        if known is not None and known[0] == value:
            member = known[1]
        elif _KEY.fullmatch(key) is not None:
            member = f"{key}={quote(str(value), safe=_SAFE)}"
        else:
            continue  # a key that is not a token cannot be written in this format
        size = len(member) + (1 if members else 0)
        if total + size > MAX_BYTES:
            continue
        total += size
        members.append(member)
        if len(members) == MAX_ENTRIES:
            break
    if members:
        yield HEADER, ",".join(members)


class BaggagePropagator(FormatPropagator):
    """`baggage: k=v;prop,k2=v2` (at most 180 members and 8192 bytes; invalid members are skipped)."""

    FIELDS = frozenset({HEADER})

    def read(self, headers: Headers, context: Context) -> Context:
        return extract(headers, context)

    def write(self, out: Outgoing) -> Iterator[tuple[str, str]]:
        return render(out)
