"""Context keys that carry what an OpenTelemetry SpanContext cannot: request id, debug, a bare deny.

Every format reads and writes these through the accessors below, so the proxy, the integrations and the
sampler agree on one meaning without importing each other.
"""

from __future__ import annotations

from opentelemetry.context import Context, create_key, get_value, set_value

__all__ = [
    "DEBUG_KEY",
    "DEFERRED_KEY",
    "REQUEST_ID_KEY",
    "SAMPLING_HINT_KEY",
    "get_request_id",
    "get_sampling_hint",
    "is_debug",
    "is_sampling_deferred",
    "set_debug",
    "set_request_id",
    "set_sampling_deferred",
    "set_sampling_hint",
]

# The keys are exported for the propagators alone, which set several at once in a single context copy.
REQUEST_ID_KEY = _REQUEST_ID = create_key("meshtrace-request-id")
DEBUG_KEY = _DEBUG = create_key("meshtrace-debug")
SAMPLING_HINT_KEY = _SAMPLING_HINT = create_key("meshtrace-sampling-hint")


def get_request_id(context: Context | None = None) -> str | None:
    """The `x-request-id` of the request being served, if any."""
    value = get_value(_REQUEST_ID, context)
    return value if isinstance(value, str) else None


def set_request_id(request_id: str, context: Context | None = None) -> Context:
    return set_value(_REQUEST_ID, request_id, context)


def is_debug(context: Context | None = None) -> bool:
    """True when the incoming trace asked for debug (B3 `X-B3-Flags: 1`, `b3: …-d`, Jaeger flag 0x02)."""
    return get_value(_DEBUG, context) is True


def set_debug(debug: bool, context: Context | None = None) -> Context:
    return set_value(_DEBUG, debug, context)


def get_sampling_hint(context: Context | None = None) -> bool | None:
    """A sampling decision that arrived without trace ids (`b3: 0`), or a debug force (True); None = no hint."""
    value = get_value(_SAMPLING_HINT, context)
    return value if isinstance(value, bool) else None


def set_sampling_hint(sampled: bool, context: Context | None = None) -> Context:
    return set_value(_SAMPLING_HINT, sampled, context)


DEFERRED_KEY = _DEFERRED = create_key("meshtrace-sampling-deferred")


def is_sampling_deferred(context: Context | None = None) -> bool:
    """True when trace ids arrived without a sampling decision (B3 with no `X-B3-Sampled`, OT with no
    `ot-tracer-sampled`): the receiver may decide, and a forwarded remote context stays undecided."""
    return get_value(_DEFERRED, context) is True


def set_sampling_deferred(deferred: bool, context: Context | None = None) -> Context:
    return set_value(_DEFERRED, deferred, context)
