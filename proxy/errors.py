"""The sidecar's exception tree; everything derives from meshtrace's MeshtraceError."""

from __future__ import annotations

from meshtrace import MeshtraceError

__all__ = ["ProtocolError", "ProxyError", "UpstreamError"]


class ProxyError(MeshtraceError):
    """Base of every error the sidecar raises on purpose."""


class ProtocolError(ProxyError):
    """A downstream request broke HTTP/1.1 framing or limits; answered locally with `status` and closed."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class UpstreamError(ProxyError):
    """The upstream could not be reached or misbehaved; `flag` is the Envoy response flag to report."""

    def __init__(self, flag: str, reason: str) -> None:
        super().__init__(reason)
        self.flag = flag
        self.reason = reason
