"""Envoy's `x-request-id`, copied unchanged from the inbound request to every outbound call."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from opentelemetry.context import Context

from meshtrace.propagation._common import FormatPropagator, Headers, Outgoing, visible_value
from meshtrace.propagation._context import get_request_id, set_request_id

__all__ = ["RequestIdPropagator"]

HEADER: Final = "x-request-id"
# Envoy makes UUIDs, but any opaque id is passed on; the bound keeps a hostile value from being amplified.
MAX_LENGTH: Final = 1024


def parse(headers: Headers) -> str | None:
    return accept(headers.first(HEADER))


def accept(value: str | None) -> str | None:
    """The request id to keep, given the header's first value stripped of optional whitespace."""
    if not value or len(value) > MAX_LENGTH or not visible_value(value):
        return None
    return value


def extract(headers: Headers, context: Context) -> Context:
    request_id = parse(headers)
    return context if request_id is None else set_request_id(request_id, context)


def sendable(request_id: str) -> bool:
    """Checked again on the way out: the id may have been set by code, and must not break the header."""
    return 0 < len(request_id) <= MAX_LENGTH and visible_value(request_id)


def render(out: Outgoing) -> Iterator[tuple[str, str]]:
    request_id = get_request_id(out.context)
    if request_id is not None and sendable(request_id):
        yield HEADER, request_id


class RequestIdPropagator(FormatPropagator):
    """`x-request-id` in, the same `x-request-id` out."""

    FIELDS = frozenset({HEADER})

    def read(self, headers: Headers, context: Context) -> Context:
        return extract(headers, context)

    def write(self, out: Outgoing) -> Iterator[tuple[str, str]]:
        return render(out)
