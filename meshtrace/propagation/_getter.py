"""A case-insensitive OpenTelemetry Getter for plain header mappings."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.propagators.textmap import CarrierValT, Getter

__all__ = ["CaseInsensitiveGetter", "values_of"]


def values_of(value: object) -> list[str] | None:
    """Normalise one carrier value to a list of strings; anything that is not text counts as absent."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        strings = [item for item in value if isinstance(item, str)]
        return strings or None
    return None


class CaseInsensitiveGetter(Getter[Mapping[str, CarrierValT]]):
    """Reads a `Mapping[str, str | list[str]]` whatever the case of its keys.

    HTTP header names are case-insensitive, but OpenTelemetry's default getter looks keys up exactly, so
    `{"X-B3-TraceId": ...}` would be missed. An exact hit is tried first (the common, cheap case), then a
    scan. When a name is present several times (different case), the first one in iteration order wins;
    list values are returned whole, and the propagators use the first element.
    """

    def get(self, carrier: Mapping[str, CarrierValT], key: str) -> list[str] | None:
        found = carrier.get(key)
        if found is None:
            wanted = key.lower()
            if wanted != key:
                found = carrier.get(wanted)
            if found is None:
                for name, value in carrier.items():
                    if isinstance(name, str) and name.lower() == wanted:
                        found = value
                        break
        return values_of(found)

    def keys(self, carrier: Mapping[str, CarrierValT]) -> list[str]:
        return [name for name in carrier if isinstance(name, str)]
