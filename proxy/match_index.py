"""First match wins over one VirtualService's `http[]` rules, without trying every rule in turn.

Theory of operation. Every `match[]` block of every rule becomes an entry, in Istio's order (rule by rule, block
by block; a rule without blocks is one entry that matches everything). Trying the entries in that order and
taking the first that holds is the definition, and `MatchTable(..., indexed=False)` does exactly that.

The index picks one request field (`vs_match.Key`: method, authority, uri path or one header) that entries need
one exact value of: the one leaving the shortest worst-case walk, say header `x-route`. An entry needing
`x-route: r7` can only hold for a request whose `x-route` is `r7`; entries that need no exact `x-route` (regex,
prefix, presence, withoutHeaders, ignoreUriCase, other fields only) may hold for any request. So for each value
`v` the table keeps, in the original order, the entries needing `v` plus all those needing no value, and a request
walks only the list for its own value (or the no-value list when its value is in no entry). Order is preserved
because every list is a subsequence of the full order that keeps every entry which could hold for such a request:
no later entry can win over an earlier one that holds. An entry reached through its value drops the condition the
lookup already checked, and each list ends at its first entry with nothing left to check (nothing after it can
be reached).

The lists share the no-value entries, so a table costs values x no-value entries; a field that would take more
than `MAX_ENTRIES` is not used (linear is correct, only slower). Only one field is indexed: configs whose rules
are told apart by several different fields gain less.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from .istio_config import RequestMatch
from .vs_match import Check, Condition, Key, RequestView, all_of, conditions, key_of

__all__ = ["MAX_ENTRIES", "Entry", "MatchTable"]

R = TypeVar("R")
MAX_ENTRIES = 100_000       # across all per-value lists of one table

# (what is left to check (None: nothing), the rule, the matched block's uri prefix (for `rewrite.uri`))
Entry = tuple[Check | None, R, bytes | None]


def _prefix(spec: RequestMatch) -> bytes | None:
    return spec.uri.value.encode() if spec.uri is not None and spec.uri.kind == "prefix" else None


def _until_certain(entries: list[Entry[R]]) -> list[Entry[R]]:
    """Entries up to and including the first that always holds: those after it are unreachable."""
    for n, entry in enumerate(entries):
        if entry[0] is None:
            return entries[:n + 1]
    return entries


def _best_key(blocks: list[list[Condition]]) -> Key | None:
    """The field whose dispatch leaves the shortest worst-case walk (its most shared value's blocks plus all the
    blocks needing no value of it), if that is shorter than walking every block and the lists stay small."""
    values: dict[Key, Counter[bytes]] = {}
    for conds in blocks:
        seen: set[Key] = set()
        for c in conds:
            if c.key is not None and c.key not in seen:     # a block is filed under its first value of a field
                seen.add(c.key)
                values.setdefault(c.key, Counter())[c.value] += 1
    best, best_walk = None, len(blocks)
    for key, counts in values.items():
        keyed = sum(counts.values())
        unkeyed = len(blocks) - keyed
        walk = max(counts.values()) + unkeyed
        if walk < best_walk and len(counts) * unkeyed + keyed <= MAX_ENTRIES:
            best, best_walk = key, walk
    return best


class MatchTable(Generic[R]):
    """`first(view)`: the entry of the first rule (and block) matching the request, or None."""

    __slots__ = ("_by_value", "_default", "_read", "key")

    def __init__(self, rules: Sequence[tuple[R, Sequence[RequestMatch]]], *, indexed: bool = True) -> None:
        # Each block as (rule, prefix, its conditions), in first-match order.
        blocks: list[tuple[R, bytes | None, list[Condition]]] = []
        for rule, specs in rules:
            if not specs:
                blocks.append((rule, None, []))
            blocks += [(rule, _prefix(spec), conditions(spec)) for spec in specs]
        linear: list[Entry[R]] = [(all_of([c.check for c in conds]), rule, prefix) for rule, prefix, conds in blocks]
        self.key: Key | None = None
        self._default = _until_certain(linear)
        self._by_value: dict[bytes, list[Entry[R]]] = {}
        self._read: Callable[[RequestView], bytes | None] = key_of(("uri", b""))
        key = _best_key([conds for _, _, conds in blocks]) if indexed else None
        if key is None:
            return
        unkeyed: list[Entry[R]] = []
        lists: dict[bytes, list[Entry[R]]] = {}
        for (rule, prefix, conds), entry in zip(blocks, linear, strict=True):
            needed = next((c for c in conds if c.key == key), None)
            if needed is None:
                unkeyed.append(entry)
                for entries in lists.values():
                    entries.append(entry)
            else:
                rest = all_of([c.check for c in conds if c is not needed])
                found = lists.get(needed.value)
                if found is None:       # a value's list starts with every no-value entry before its first one
                    found = lists[needed.value] = list(unkeyed)
                found.append((rest, rule, prefix))
        self.key = key
        self._read = key_of(key)
        self._default = _until_certain(unkeyed)
        self._by_value = {value: _until_certain(entries) for value, entries in lists.items()}

    def first(self, view: RequestView) -> Entry[R] | None:
        if self.key is None:
            entries = self._default
        else:
            value = self._read(view)
            entries = self._default if value is None else self._by_value.get(value, self._default)
        for entry in entries:
            check = entry[0]
            if check is None or check(view):
                return entry
        return None
