"""httpx: trace headers appended to the request's raw header list in one step, where that is what `__setitem__` gives.

`httpx.Headers.__setitem__` encodes the name and value, lower-cases the name and scans the whole header list
for that name, in Python, once per header: ten trace headers cost ten scans of a growing list. On a request
that carries none of the trace headers yet (every first hop: a redirect hop's request copies the previous
hop's, and takes the public way), `__setitem__` would append each one, as (name, lowercase name, value) in
bytes; `write_into_list` appends the same tuples with one `extend`, encoded as `__setitem__` encodes them (the
headers' own encoding, else utf-8).

A request already holding any of the names (in any case, user-set or copied), names repeated within the items,
a Headers subclass, or a Headers laid out otherwise (the probe `list_write_matches`, run when httpx is
instrumented) all take `set_each`: a user's header of the same name is replaced in place, as before.
"""

from __future__ import annotations

from typing import Any

from meshtrace.integrations._client import set_each
from meshtrace.propagation import Keyed

__all__ = ["list_write_matches", "use_headers_type", "write_into_list"]

#: The httpx.Headers class the direct write applies to (exact type), set once its probe passed.
_headers_type: type | None = None


def write_into_list(headers: Any, keyed: Keyed) -> None:
    """`set_each(headers, keyed)`, as one append to the raw list when nothing in it has any of the names."""
    if type(headers) is _headers_type:
        exact: Any = headers
        raw: list[tuple[bytes, bytes, bytes]] = exact._list
        encoding = exact._encoding or "utf-8"
        try:
            # (name as given, lowercase name, value), encoded: exactly the tuple __setitem__ appends
            added = [(key := name.encode(encoding), key.lower(), pair[1].encode(encoding)) for name, pair in keyed]
        except (UnicodeEncodeError, AttributeError):
            added = None  # let __setitem__ raise (or cope) exactly as it would
        if added is not None:
            names = {item[1] for item in added}
            if len(names) == len(added) and names.isdisjoint([item[1] for item in raw]):
                raw.extend(added)
                return
    set_each(headers, keyed)


def list_write_matches(headers_type: Any) -> bool:
    """True when `write_into_list` leaves `headers_type` headers as `set_each` does (the probe)."""
    global _headers_type  # noqa: PLW0603 - the probe decides the one type the direct write applies to
    previous = _headers_type
    try:
        keyed = tuple((name, (name, value)) for name, value in (
            ("traceparent", "00-1-2-01"), ("x-b3-sampled", "1"), ("b3", "1")))
        cases: tuple[dict[str, str], ...] = ({"Accept": "*/*", "Host": "svc"},
                                             {"Accept": "*/*", "X-B3-Sampled": "0", "B3": "0"}, {})
        _headers_type = headers_type
        for start in cases:
            expected, probed = headers_type(start), headers_type(start)
            set_each(expected, keyed)
            write_into_list(probed, keyed)
            if (type(probed) is not headers_type or list(probed.raw) != list(expected.raw)
                    or list(probed.items()) != list(expected.items())
                    or any(probed[name.upper()] != pair[1] for name, pair in keyed)):
                return False
        return True
    except Exception:
        return False
    finally:
        _headers_type = previous


def use_headers_type(headers_type: type | None) -> None:
    """Make `write_into_list` write directly into `headers_type` (None: into nothing, always `set_each`)."""
    global _headers_type  # noqa: PLW0603 - set by the instrumentor once the probe passed
    _headers_type = headers_type
