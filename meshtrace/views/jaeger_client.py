"""Jaeger's HTTP query API (the one its UI uses) through urllib: traces by service or id, and dependencies."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from meshtrace.errors import MeshtraceError

__all__ = ["JaegerClient", "JaegerError"]


class JaegerError(MeshtraceError):
    """Jaeger could not be reached or answered something other than its API's JSON."""


class JaegerClient:
    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, params: dict[str, str | int] | None = None) -> Any:
        query = "?" + urllib.parse.urlencode(params) if params else ""
        url = f"{self.url}{path}{query}"
        # Never through an HTTP_PROXY: Jaeger is addressed directly.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(url, timeout=self.timeout) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise JaegerError(f"{url}: HTTP {exc.code}") from exc
        except (OSError, ValueError) as exc:
            raise JaegerError(f"{url}: {exc}") from exc
        if not isinstance(body, dict):
            raise JaegerError(f"{url}: not a Jaeger API answer")
        return body.get("data")

    def services(self) -> list[str]:
        return sorted(self._get("/api/services") or [])

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        """The trace with this id as Jaeger's raw `data` list (empty when unknown)."""
        return list(self._get(f"/api/traces/{trace_id}") or [])

    def traces(self, service: str, *, limit: int = 20, lookback: str = "1h", operation: str | None = None,
               start_us: int | None = None) -> list[dict[str, Any]]:
        """Recent traces through `service`; `start_us` (epoch microseconds) drops those that began earlier."""
        params: dict[str, str | int] = {"service": service, "limit": limit, "lookback": lookback}
        if operation:
            params["operation"] = operation
        if start_us is not None:
            params["start"] = start_us
            params["end"] = int(time.time() * 1_000_000) + 60_000_000
        return list(self._get("/api/traces", params) or [])

    def dependencies(self, lookback_seconds: float = 3600.0) -> list[dict[str, Any]]:
        end_ms = int(time.time() * 1000)
        return list(self._get("/api/dependencies", {"endTs": end_ms, "lookback": int(lookback_seconds * 1000)})
                    or [])
