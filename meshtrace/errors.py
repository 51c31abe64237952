"""The meshtrace exception tree: every error meshtrace raises on purpose derives from MeshtraceError."""

from __future__ import annotations

__all__ = ["ConfigError", "MeshtraceError"]


class MeshtraceError(Exception):
    """Base of every error meshtrace raises on purpose."""


class ConfigError(MeshtraceError):
    """A setting (argument, environment variable or file) is invalid; the message names which and why."""

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        where = ", ".join(
            part for part in (
                source,
                f"line {line}" if line is not None else None,
                f"field {field!r}" if field else None,
            ) if part
        )
        super().__init__(f"{where}: {message}" if where else message)
        self.source = source
        self.line = line
        self.field = field
