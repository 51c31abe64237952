"""VirtualService `mirror` + `mirrorPercentage`: a fire-and-forget copy of the request to a shadow destination.

Theory of operation. A route with a mirror keeps the request body while it stays within the retry buffer
(`exchange.KEEP_LIMIT`, 64 KiB); a request whose body outgrew it is not mirrored (its bytes are gone), nor is an
upgrade. When the whole request has been read, `send_mirror` starts a task of its own: it picks a host of the
mirror's cluster, sends the head (Host/authority with `-shadow` appended to the host, port kept; the body
re-framed with Content-Length) and reads the response to its end, then throws it away. Nothing of it reaches the
client: errors, refusals and hangs only end the task (bounded by `MIRROR_TIMEOUT`). With tracing on, the copy
gets its own CLIENT span, a child of the hop span in the same trace, tagged `meshtrace.mirror=true`; it is not
the request's upstream (the hop record and span keep describing the real destination).

The mirror cluster is a cluster like any other: the host is picked among those its outlier detection has not
ejected, and each copy's outcome is recorded there (`MirrorPolicy.record`: the status, or 0 when the copy got no
response head: refused, reset or timed out). So a shadow that only ever receives mirrored traffic still gets its
bad hosts ejected, as Envoy's shadow cluster does.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from .codec import encode_request_head
from .headers import Headers
from .router import split_authority

if TYPE_CHECKING:
    from .balancer import Host
    from .tracing import HopTracer

__all__ = ["MIRROR_TIMEOUT", "MirrorPolicy", "send_mirror", "shadow_authority"]

logger = logging.getLogger("meshtrace.proxy")

MIRROR_TIMEOUT = 10.0               # seconds a mirror copy may take in all before it is dropped
_TASKS: set[asyncio.Task[None]] = set()     # strong references: a fire-and-forget task must not be collected
_DROP = frozenset({b"host", b"content-length", b"transfer-encoding", b"expect", b"connection", b"upgrade"})


class MirrorPolicy:
    """Where a route's copies go and how often (`mirrorPercentage`, absent = 100)."""

    __slots__ = ("cluster_name", "percent", "pick", "record", "rng")

    def __init__(self, pick: Callable[[], Host | None], cluster_name: str, percent: float,
                 rng: random.Random, *, record: Callable[[Host, int], None] | None = None) -> None:
        self.pick = pick
        self.cluster_name = cluster_name
        self.percent = percent
        self.rng = rng
        self.record = record            # the mirror cluster's outlier detection, when it has one

    def wanted(self) -> bool:
        percent = self.percent
        return percent >= 100.0 or (percent > 0.0 and self.rng.random() * 100.0 < percent)


def shadow_authority(authority: bytes) -> bytes:
    """`reviews` -> `reviews-shadow`, `reviews:9080` -> `reviews-shadow:9080` (Istio's mirror Host)."""
    if authority.startswith(b"["):
        return authority        # an IPv6 literal has no name to suffix
    host, sep, port = authority.rpartition(b":")
    if sep and port.isdigit():
        return host + b"-shadow:" + port
    return authority + b"-shadow"


def send_mirror(policy: MirrorPolicy, method: bytes, target: bytes, authority: bytes, headers: Headers,  # noqa: PLR0917
                body: list[bytes], *, tracer: HopTracer | None, parent: trace.Span | None,
                parent_context: Context | None) -> None:
    """Start the copy as its own task; never raises into the exchange."""
    try:
        host = policy.pick()
        if host is None:
            return
        out: Headers = [(b"host", shadow_authority(authority))]
        out += [pair for pair in headers if pair[0] not in _DROP]
        size = sum(len(part) for part in body)
        if size or method in (b"POST", b"PUT", b"PATCH"):
            out.append((b"content-length", b"%d" % size))
        out.append((b"connection", b"close"))     # alone on its connection: the response ends at EOF at worst
        span: trace.Span | None = None
        block = b""
        if tracer is not None and parent is not None:
            context = trace.set_span_in_context(parent, parent_context or Context())
            address = split_authority(shadow_authority(authority))
            span = tracer.tracer.start_span(
                f"{address[0] if address else authority.decode('latin-1')} mirror", context=context,
                kind=SpanKind.CLIENT,
                attributes={"meshtrace.mirror": True, "http.request.method": method.decode("latin-1"),
                            "server.address": host.address, "server.port": host.port,
                            "upstream_cluster": policy.cluster_name, "component": "proxy"})
            out = [pair for pair in out if pair[0] not in tracer.extract_names or pair[0] == b"x-request-id"]
            # The trace headers as the rendered block the request-head encoder splices in (as the exchange sends
            # them); pairs only when this kind of context is not rendered.
            rendered = tracer.render(span, parent_context or Context())
            if rendered is not None:
                block = rendered[0]
            else:
                tracer.inject(span, parent_context or Context(), out)
        data = encode_request_head(method, target, out, block) + b"".join(body)
        task = asyncio.get_running_loop().create_task(_run(host, data, span, policy.record))
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)
    except Exception:
        logger.exception("starting a mirror copy failed")


async def _run(host: Host, data: bytes, span: trace.Span | None, record: Callable[[Host, int], None] | None) -> None:
    status = 0
    error = ""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(MIRROR_TIMEOUT):
            reader, writer = await asyncio.open_connection(host.address, host.port)
            writer.write(data)
            await writer.drain()
            line = await reader.readline()
            parts = line.split(None, 2)
            if len(parts) >= 2 and parts[1].isdigit():
                status = int(parts[1])
            # Read and discard the rest: the copy asked for `Connection: close`, so it ends at EOF.
            while await reader.read(65536):
                pass
    except TimeoutError:
        error = "timeout"
    except (OSError, asyncio.IncompleteReadError) as exc:
        error = type(exc).__name__
    except asyncio.CancelledError:
        error = "cancelled"
    finally:
        if writer is not None:
            writer.close()
        if record is not None and error != "cancelled":     # cancelled: the sidecar stopping, not the host
            record(host, status)
        if span is not None:
            if status:
                span.set_attribute("http.response.status_code", status)
            if error or status >= 500 or not status:
                span.set_status(Status(StatusCode.ERROR, error or None))
                span.set_attribute("error.type", error or str(status))
            span.end()
