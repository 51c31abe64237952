"""Cheaper span starts and attribute writes on the OpenTelemetry SDK, the public API being the fallback.

Theory of operation. The SDK validates and copies every attribute value on its way into a span (a type walk
and a lock per value: about 1 us each, more than half the cost of an instrumented request's span). The spans
meshtrace makes carry a handful of plain `str`/`int`/`bool`/`float` values that need none of that, so:

- `set_clean_attributes(span, attributes)` writes them straight into the SDK span's attribute dict when
  nothing could tell the difference: every key a non-empty `str`, every value a plain scalar, the span an SDK
  span still recording, no value-length limit, and the attribute-count limit not reached. Anything else
  (another SDK, a limit in the way, a list value) takes `span.set_attributes`, which is always correct.
- `start_span(tracer, ...)` first tries meshtrace.lightspan: the same SDK span built directly (see there),
  for a tracer configured the usual way. Failing that (custom span limits, a disabled tracer, a non-SDK
  tracer or processor fan-out, a sampler not declared attribute-blind), it starts an ordinary SDK span
  without attributes and then writes them as above, but only when no one could observe them missing at
  start: an attribute-blind sampler (meshtrace.sampling.is_attribute_blind; a wrapper sampler defined
  elsewhere declares itself with `declare_attribute_blind`) and span processors that all ignore `on_start`.
  A user's sampler or span processor otherwise gets them the public way, at start, as the SDK documents.
  Either way the span is started with `record_exception=False, set_status_on_exception=False`: callers attach
  the span's context themselves (no `use_span`) and record exceptions and status explicitly.

- `start_owned_span(tracer, ...)` is `start_span` for an attribute dict the caller built for the span alone and
  whose values it checked where it read them (the WSGI server span): a light span keeps that dict as is.
- On a light span, `set_clean_attributes` is the span's own `set_attributes`, which writes plain values into
  its plain attribute dict (see meshtrace.lightspan).

The resulting span is an ordinary SDK span: exporters and processors see the same ReadableSpan as with
`tracer.start_span(name, context, kind, attributes)`; tests/tracing/test_span_fast_path.py holds them equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.util.types import AttributeValue

from meshtrace.lightspan import QUIET_ON_START, LightSpan, plain_attributes, start_light_span
from meshtrace.sampling import declare_attribute_blind, is_attribute_blind

__all__ = ["declare_attribute_blind", "set_clean_attributes", "start_owned_span", "start_span"]


def set_clean_attributes(span: trace.Span, attributes: Mapping[str, AttributeValue]) -> None:
    """`span.set_attributes(attributes)`, skipping the SDK's per-value copy when nothing could tell."""
    if not attributes:
        return
    if type(span) is LightSpan:
        span.set_attributes(attributes)  # its own checks, without the SDK's copy when nothing could tell
        return
    bounded: Any = getattr(span, "_attributes", None)
    raw = getattr(bounded, "_dict", None)
    if type(raw) is dict and _fits(bounded, raw, attributes):
        raw.update(attributes)
    else:
        span.set_attributes(attributes)


def _fits(bounded: Any, raw: dict[str, Any], attributes: Mapping[str, AttributeValue]) -> bool:
    try:
        if bounded._immutable or bounded.max_value_len is not None:  # ended, or values to truncate
            return False
        maxlen = bounded.maxlen
    except AttributeError:
        return False
    if maxlen is not None and len(raw) + len(attributes) > maxlen:
        return False  # the SDK would evict and count: let it
    if not raw.keys().isdisjoint(attributes):
        return False  # the SDK moves a re-set key to the end of the order: let it
    return plain_attributes(attributes)


def start_span(  # noqa: PLR0917  (Tracer.start_span's own parameters)
    tracer: trace.Tracer,
    name: str,
    context: Context | None,
    kind: trace.SpanKind,
    attributes: Mapping[str, AttributeValue] | None = None,
    start_time: int | None = None,
) -> trace.Span:
    """`tracer.start_span(name, context, kind, attributes, start_time=start_time)`, cheaper on the SDK.

    Exceptions are neither recorded nor turned into a status by the span itself (the caller does both).
    """
    span = start_light_span(tracer, name, context, kind, attributes, start_time)
    if span is not None:
        return span
    return _sdk_start(tracer, name, context, kind, attributes, start_time)


def start_owned_span(tracer: trace.Tracer, name: str, context: Context | None, kind: trace.SpanKind,
                     attributes: dict[str, AttributeValue]) -> trace.Span:
    """`start_span` for a dict built for this span alone, whose keys the caller knows to be non-empty `str`s
    and values plain `str`/`int`/`float`/`bool`s (it checked them where it read them): a light span keeps the
    dict itself, neither checked again nor copied. The caller must not touch it afterwards."""
    span = start_light_span(tracer, name, context, kind, attributes, None, True)  # owned
    if span is not None:
        return span
    return _sdk_start(tracer, name, context, kind, attributes, None)


def _sdk_start(  # noqa: PLR0917  (Tracer.start_span's own parameters)
    tracer: trace.Tracer,
    name: str,
    context: Context | None,
    kind: trace.SpanKind,
    attributes: Mapping[str, AttributeValue] | None,
    start_time: int | None,
) -> trace.Span:
    if attributes and _attributes_may_follow(tracer):
        span = tracer.start_span(name, context, kind, None, (), start_time, False, False)
        set_clean_attributes(span, attributes)
        return span
    return tracer.start_span(name, context, kind, attributes, (), start_time, False, False)


#: id(tracer) -> (tracer, sampler, processors tuple, verdict): recomputed when the tracer's processors change.
_verdicts: dict[int, tuple[object, object, object, bool]] = {}
_MAX_VERDICTS = 256


def _attributes_may_follow(tracer: trace.Tracer) -> bool:
    """True when no sampler or span processor of `tracer` could see attributes passed at start."""
    if type(tracer) is not SdkTracer:
        return False
    # Read defensively: a future SDK may rename these, and then the public path is the only right one.
    sampler = getattr(tracer, "sampler", None)
    processors = getattr(getattr(tracer, "span_processor", None), "_span_processors", None)
    cached = _verdicts.get(id(tracer))
    if cached is not None and cached[0] is tracer and cached[1] is sampler and cached[2] is processors:
        return cached[3]
    verdict = processors is not None and is_attribute_blind(sampler) and all(
        isinstance(processor, SpanProcessor) and type(processor).on_start in QUIET_ON_START
        for processor in processors)
    if len(_verdicts) >= _MAX_VERDICTS:
        _verdicts.clear()
    _verdicts[id(tracer)] = (tracer, sampler, processors, verdict)
    return verdict

