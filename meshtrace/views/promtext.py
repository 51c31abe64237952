"""A small reader of the Prometheus text format, enough for the sidecars' `/metrics` (no exemplars, no OpenMetrics)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = ["Sample", "delta", "parse_samples"]


@dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float

    def label(self, name: str, default: str = "") -> str:
        return next((value for key, value in self.labels if key == name), default)


_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


def _labels(text: str, start: int) -> tuple[tuple[tuple[str, str], ...], int]:
    """Parse `{a="x",b="y"}` beginning at text[start] == "{"; return the pairs and the index after "}"."""
    pairs: list[tuple[str, str]] = []
    i = start + 1
    while True:
        while i < len(text) and text[i] in " ,":
            i += 1
        if i >= len(text):
            raise ValueError("unterminated label set")
        if text[i] == "}":
            return tuple(pairs), i + 1
        eq = text.index("=", i)
        key = text[i:eq].strip()
        if text[eq + 1] != '"':
            raise ValueError(f"label {key} has no quoted value")
        j = eq + 2
        value = []
        while text[j] != '"':
            if text[j] == "\\":
                value.append(_ESCAPES.get(text[j + 1], text[j + 1]))
                j += 2
            else:
                value.append(text[j])
                j += 1
        pairs.append((key, "".join(value)))
        i = j + 1


def parse_samples(text: str) -> Iterator[Sample]:
    """Every sample line of `text`; comments, blank and malformed lines are skipped."""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            brace = line.find("{")
            space = line.find(" ")
            if brace != -1 and (space == -1 or brace < space):
                name = line[:brace]
                labels, end = _labels(line, brace)
                rest = line[end:].split()
            else:
                name, *rest = line.split()
                labels = ()
            value = float(rest[0])
        except (ValueError, IndexError):
            continue
        if not math.isnan(value):
            yield Sample(name, labels, value)


def delta(after: Iterable[Sample], before: Iterable[Sample]) -> list[Sample]:
    """Counters of `after` minus those of `before` (a series missing before counts from zero; resets clamp to 0)."""
    earlier = {(s.name, s.labels): s.value for s in before}
    return [Sample(s.name, s.labels, max(0.0, s.value - earlier.get((s.name, s.labels), 0.0))) for s in after]
