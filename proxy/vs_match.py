"""VirtualService `match` blocks compiled once into predicates over a request head (no per-request compile).

Matching happens on bytes, as the codec delivers them. `uri` is matched against the path without its query
string (Envoy's rule for exact and regex path matches); `regex` is a full match, as RE2 in Istio.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import parse_qsl

from .istio_config import RequestMatch, StringMatch

__all__ = ["CompiledMatch", "RequestView", "compile_string"]

BytesPredicate = Callable[[bytes], bool]


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

    __slots__ = ("_query", "authority", "hmap", "method", "path", "query_text", "scheme")

    def __init__(self, method: bytes, path: bytes, query_text: bytes, authority: bytes, scheme: bytes,  # noqa: PLR0917
                 hmap: dict[bytes, bytes]) -> None:
        self.method = method
        self.path = path
        self.query_text = query_text
        self.authority = authority
        self.scheme = scheme
        self.hmap = hmap
        self._query: dict[bytes, bytes] | None = None

    @property
    def query(self) -> dict[bytes, bytes]:
        if self._query is None:
            pairs = parse_qsl(self.query_text.decode("latin-1"), keep_blank_values=True)
            self._query = {k.encode("latin-1"): v.encode("latin-1") for k, v in pairs}
        return self._query


def _named(pairs: tuple[tuple[str, StringMatch | None], ...], lower: bool) -> list[tuple[bytes, BytesPredicate | None]]:
    return [(name.lower().encode() if lower else name.encode(), None if m is None else compile_string(m))
            for name, m in pairs]


class CompiledMatch:
    """One `match[]` block: every field present must hold (AND)."""

    __slots__ = ("authority", "headers", "ignore_case", "method", "query", "scheme", "uri", "without")

    def __init__(self, spec: RequestMatch) -> None:
        self.ignore_case = spec.ignore_uri_case
        self.uri = compile_string(spec.uri, ignore_case=self.ignore_case) if spec.uri is not None else None
        self.authority = compile_string(spec.authority) if spec.authority is not None else None
        self.method = compile_string(spec.method) if spec.method is not None else None
        self.scheme = compile_string(spec.scheme) if spec.scheme is not None else None
        self.headers = _named(spec.headers, True)
        self.without = _named(spec.without_headers, True)
        self.query = _named(spec.query_params, False)

    def __call__(self, view: RequestView) -> bool:
        if self.uri is not None and not self.uri(view.path.lower() if self.ignore_case else view.path):
            return False
        if self.method is not None and not self.method(view.method):
            return False
        if self.authority is not None and not self.authority(view.authority):
            return False
        if self.scheme is not None and not self.scheme(view.scheme):
            return False
        hmap = view.hmap
        for name, predicate in self.headers:
            value = hmap.get(name)
            if value is None or (predicate is not None and not predicate(value)):
                return False
        for name, predicate in self.without:
            value = hmap.get(name)
            if value is not None and (predicate is None or predicate(value)):
                return False
        if self.query:
            query = view.query
            for name, predicate in self.query:
                value = query.get(name)
                if value is None or (predicate is not None and not predicate(value)):
                    return False
        return True
