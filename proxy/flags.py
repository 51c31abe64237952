"""Envoy response flags: the short codes that say why a hop ended the way it did (REFERENCE.md section 3)."""

from __future__ import annotations

__all__ = [
    "DC", "DI", "DPE", "FI", "LR", "NONE", "NR", "SI", "UC", "UF", "UH", "UO", "UPE", "UR", "URX", "UT", "join",
]

NONE = "-"          # no flag: the exchange went as asked
UH = "UH"           # no healthy upstream host (503)
UF = "UF"           # upstream connection failure (503)
UO = "UO"           # upstream overflow: circuit breaker open (503)
NR = "NR"           # no route configured for the request (404)
URX = "URX"         # retry limit exceeded
UT = "UT"           # upstream request timeout (504)
UC = "UC"           # upstream connection terminated (503, or a downstream reset once headers went out)
UR = "UR"           # upstream remote reset
LR = "LR"           # local reset
DC = "DC"           # downstream connection terminated
DI = "DI"           # delay injected by a fault filter
FI = "FI"           # abort injected by a fault filter
DPE = "DPE"         # downstream protocol error: the request could not be parsed
UPE = "UPE"         # upstream protocol error: the response could not be parsed
SI = "SI"           # stream idle timeout: no byte moved either way for `stream_idle_timeout`


def join(flags: list[str]) -> str:
    """Envoy's spelling of a flag set: comma-joined in the order they happened, '-' when empty."""
    return ",".join(flags) if flags else NONE
