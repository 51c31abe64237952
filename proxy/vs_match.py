"""VirtualService `match` blocks compiled once into closures over a request view (no per-request compile).

Matching happens on bytes, as the codec delivers them. `uri` is matched against the path without its query
string (Envoy's rule for exact and regex path matches); `regex` is a full match, as RE2 in Istio. Header names
are matched lower-case (the codec lowers them); a header seen twice is matched by its last value (`hmap`).

A block is a list of `Condition`s, one per field, all of which must hold (AND). Each condition that needs one
exact value of a request field also names that field (`Key`), so match_index.py can dispatch on it and drop the
condition the dispatch has already checked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from urllib.parse import parse_qsl

from .istio_config import RequestMatch, StringMatch

__all__ = ["Check", "Condition", "Key", "RequestView", "all_of", "compile_match", "compile_string", "conditions",
           "key_of"]

BytesPredicate = Callable[[bytes], bool]
Check = Callable[["RequestView"], bool]
# A request field an exact match can be dispatched on: ("method" | "authority" | "uri", b"") or ("header", name).
Key = tuple[str, bytes]


def compile_string(match: StringMatch, *, ignore_case: bool = False) -> BytesPredicate:
    """A predicate for one `{exact|prefix|regex}`; with ignore_case the caller passes a lowercased value."""
    value = match.value.encode("utf-8")
    if match.kind == "exact":
        if ignore_case:
            value = value.lower()
        return value.__eq__
    if match.kind == "prefix":
        if ignore_case:
            value = value.lower()
        return lambda data: data.startswith(value)
    pattern = re.compile(value, re.IGNORECASE if ignore_case else 0)
    return lambda data: pattern.fullmatch(data) is not None


class RequestView:
    """What matching reads from one request, computed lazily and at most once."""

    __slots__ = ("_lower_path", "_query", "authority", "hmap", "method", "path", "query_text", "scheme")

    def __init__(self, method: bytes, path: bytes, query_text: bytes, authority: bytes, scheme: bytes,  # noqa: PLR0917
                 hmap: dict[bytes, bytes]) -> None:
        self.method = method
        self.path = path
        self.query_text = query_text
        self.authority = authority
        self.scheme = scheme
        self.hmap = hmap
        self._query: dict[bytes, bytes] | None = None
        self._lower_path: bytes | None = None

    @property
    def lower_path(self) -> bytes:
        """The path lower-cased once, however many `ignoreUriCase` rules look at it."""
        if self._lower_path is None:
            self._lower_path = self.path.lower()
        return self._lower_path

    @property
    def query(self) -> dict[bytes, bytes]:
        if self._query is None:
            pairs = parse_qsl(self.query_text.decode("latin-1"), keep_blank_values=True)
            self._query = {k.encode("latin-1"): v.encode("latin-1") for k, v in pairs}
        return self._query


def key_of(key: Key) -> Callable[[RequestView], bytes | None]:
    """The request's value for a dispatch key (None: the header is absent)."""
    field, name = key
    if field == "header":
        return lambda view: view.hmap.get(name)
    if field == "method":
        return lambda view: view.method
    if field == "authority":
        return lambda view: view.authority
    return lambda view: view.path


class Condition:
    """One field of a block: its check, and the (key, value) it needs exactly, when it does."""

    __slots__ = ("check", "key", "value")

    def __init__(self, check: Check, key: Key | None = None, value: bytes = b"") -> None:
        self.check = check
        self.key = key
        self.value = value


def _field(match: StringMatch, read: Callable[[RequestView], bytes], key: Key | None) -> Condition:
    predicate = compile_string(match)
    if match.kind == "exact":
        value = match.value.encode("utf-8")
        return Condition(lambda view: read(view) == value, key, value)
    return Condition(lambda view: predicate(read(view)))


def _header(name: bytes, match: StringMatch | None) -> Condition:
    if match is None:
        return Condition(lambda view: name in view.hmap)
    if match.kind == "exact":
        value = match.value.encode("utf-8")
        return Condition(lambda view: view.hmap.get(name) == value, ("header", name), value)
    predicate = compile_string(match)

    def check(view: RequestView) -> bool:
        found = view.hmap.get(name)
        return found is not None and predicate(found)
    return Condition(check)


def _without(name: bytes, match: StringMatch | None) -> Condition:
    if match is None:
        return Condition(lambda view: name not in view.hmap)
    predicate = compile_string(match)

    def check(view: RequestView) -> bool:
        found = view.hmap.get(name)
        return found is None or not predicate(found)
    return Condition(check)


def _query(name: bytes, match: StringMatch | None) -> Condition:
    if match is None:
        return Condition(lambda view: name in view.query)
    predicate = compile_string(match)

    def check(view: RequestView) -> bool:
        found = view.query.get(name)
        return found is not None and predicate(found)
    return Condition(check)


def conditions(spec: RequestMatch) -> list[Condition]:
    """The fields of one `match[]` block, cheapest and most selective first."""
    out: list[Condition] = []
    if spec.uri is not None:
        if spec.ignore_uri_case:
            uri = compile_string(spec.uri, ignore_case=True)
            out.append(Condition(lambda view: uri(view.lower_path)))
        else:
            out.append(_field(spec.uri, lambda view: view.path, ("uri", b"")))
    if spec.method is not None:
        out.append(_field(spec.method, lambda view: view.method, ("method", b"")))
    if spec.authority is not None:
        out.append(_field(spec.authority, lambda view: view.authority, ("authority", b"")))
    if spec.scheme is not None:
        out.append(_field(spec.scheme, lambda view: view.scheme, None))
    out += [_header(name.lower().encode(), m) for name, m in spec.headers]
    out += [_without(name.lower().encode(), m) for name, m in spec.without_headers]
    out += [_query(name.encode(), m) for name, m in spec.query_params]
    return out


def all_of(checks: Sequence[Check]) -> Check | None:
    """One closure for the AND of `checks`; None when there is nothing to check (the block always matches)."""
    if not checks:
        return None
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda view: first(view) and second(view)
    frozen = tuple(checks)

    def every(view: RequestView) -> bool:
        for check in frozen:  # noqa: SIM110 -- a plain loop: all() over a generator costs a frame per call
            if not check(view):
                return False
        return True
    return every


def compile_match(spec: RequestMatch) -> Check | None:
    """The whole block as one closure; None when it has no field (it matches every request)."""
    return all_of([c.check for c in conditions(spec)])
