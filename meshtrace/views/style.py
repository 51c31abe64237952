"""Terminal styling shared by the views: width, colour only on a tty (and never with NO_COLOR), truncation."""

from __future__ import annotations

import os
import shutil
from typing import TextIO

__all__ = ["Style", "format_duration", "terminal_width", "truncate"]

_PALETTE = (33, 36, 35, 32, 34, 93, 96, 95, 92, 94)   # ANSI foreground codes, one per service in turn
_RED = 31
_DIM = 2
_BOLD = 1


def terminal_width(stream: TextIO | None = None, default: int = 100) -> int:
    """Columns of the terminal `stream` writes to; COLUMNS wins; `default` when it is not a terminal."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        if stream is not None and stream.isatty():
            return shutil.get_terminal_size((default, 24)).columns
    except (AttributeError, ValueError, OSError):
        pass
    return default


def truncate(text: str, width: int) -> str:
    """`text` cut to `width` characters with an ellipsis, padded with spaces to exactly `width`."""
    if width <= 0:
        return ""
    if len(text) > width:
        return text[: width - 1] + "…"
    return text.ljust(width)


def format_duration(microseconds: float) -> str:
    if microseconds < 1000:
        return f"{microseconds:.0f}µs"
    if microseconds < 1_000_000:
        return f"{microseconds / 1000:.1f}ms"
    return f"{microseconds / 1_000_000:.2f}s"


class Style:
    """ANSI colours when enabled; every method returns the text unchanged when not."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._colours: dict[str, int] = {}

    @classmethod
    def for_stream(cls, stream: TextIO, force: bool | None = None) -> Style:
        if force is not None:
            return cls(force)
        try:
            tty = stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        return cls(tty and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb")

    def _wrap(self, code: int, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled and text else text

    def service(self, name: str, text: str | None = None) -> str:
        code = self._colours.setdefault(name, _PALETTE[len(self._colours) % len(_PALETTE)])
        return self._wrap(code, name if text is None else text)

    def error(self, text: str) -> str:
        return self._wrap(_RED, text)

    def dim(self, text: str) -> str:
        return self._wrap(_DIM, text)

    def bold(self, text: str) -> str:
        return self._wrap(_BOLD, text)
