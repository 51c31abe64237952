"""Spans and traces as the views need them, read from Jaeger's query API JSON or from OTLP/JSON lines."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Span", "Trace", "traces_from_jaeger", "traces_from_otlp_lines"]

_OTLP_KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_STATUS_ERROR = 2


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_id: str | None
    service: str
    name: str
    start_us: int
    duration_us: int
    kind: str = ""
    error: bool = False
    attributes: Mapping[str, object] = field(default_factory=dict)   # the span's, over its resource's

    @property
    def end_us(self) -> int:
        return self.start_us + self.duration_us


@dataclass
class Trace:
    trace_id: str
    spans: list[Span]

    @property
    def start_us(self) -> int:
        return min(span.start_us for span in self.spans)

    @property
    def duration_us(self) -> int:
        return max(span.end_us for span in self.spans) - self.start_us

    @property
    def services(self) -> list[str]:
        return sorted({span.service for span in self.spans})

    @property
    def errors(self) -> int:
        return sum(span.error for span in self.spans)

    def tree(self) -> list[tuple[int, Span]]:
        """(depth, span) in display order: children under their parent, siblings by start time.

        A span whose parent is not in the trace (the caller's span was not exported) is shown as a root.
        """
        ids = {span.span_id for span in self.spans}
        children: dict[str | None, list[Span]] = {}
        for span in self.spans:
            parent = span.parent_id if span.parent_id in ids else None
            children.setdefault(parent, []).append(span)
        for group in children.values():
            group.sort(key=lambda s: (s.start_us, -s.duration_us))
        out: list[tuple[int, Span]] = []
        stack = [(0, span) for span in reversed(children.get(None, []))]
        while stack:
            depth, span = stack.pop()
            out.append((depth, span))
            stack.extend((depth + 1, child) for child in reversed(children.get(span.span_id, [])))
        return out

    @property
    def depth(self) -> int:
        """Spans on the longest root-to-leaf path."""
        return max((d for d, _ in self.tree()), default=-1) + 1


def _jaeger_tag(tags: Iterable[Mapping[str, Any]], key: str) -> object:
    return next((tag.get("value") for tag in tags if tag.get("key") == key), None)


def _is_error(status_code: object, error_tag: object, http_status: object) -> bool:
    if error_tag in (True, "true") or status_code == "ERROR":
        return True
    return isinstance(http_status, int | str) and str(http_status).isdigit() and int(str(http_status)) >= 500


def traces_from_jaeger(data: Iterable[Mapping[str, Any]]) -> list[Trace]:
    """Traces from the `data` list of Jaeger's `/api/traces` answers (microsecond times, process table)."""
    out = []
    for raw in data:
        processes = {pid: proc.get("serviceName", "?") for pid, proc in raw.get("processes", {}).items()}
        process_tags = {pid: {tag["key"]: tag.get("value") for tag in proc.get("tags", ()) if "key" in tag}
                        for pid, proc in raw.get("processes", {}).items()}
        spans = []
        for item in raw.get("spans", ()):
            tags = item.get("tags", ())
            parents = [ref["spanID"] for ref in item.get("references", ()) if ref.get("refType") == "CHILD_OF"]
            http_status = _jaeger_tag(tags, "http.response.status_code") or _jaeger_tag(tags, "http.status_code")
            spans.append(Span(
                trace_id=item["traceID"], span_id=item["spanID"], parent_id=parents[0] if parents else None,
                service=processes.get(item.get("processID", ""), "?"), name=item.get("operationName", ""),
                start_us=int(item.get("startTime", 0)), duration_us=int(item.get("duration", 0)),
                kind=str(_jaeger_tag(tags, "span.kind") or ""),
                error=_is_error(_jaeger_tag(tags, "otel.status_code"), _jaeger_tag(tags, "error"), http_status),
                attributes={**process_tags.get(item.get("processID", ""), {}),
                            **{tag["key"]: tag.get("value") for tag in tags if "key" in tag}},
            ))
        if spans:
            out.append(Trace(raw.get("traceID", spans[0].trace_id), spans))
    return out


def _otlp_value(value: Mapping[str, Any]) -> object:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        return int(value["intValue"])
    return None


def _otlp_attributes(items: Iterable[Mapping[str, Any]]) -> dict[str, object]:
    return {item["key"]: _otlp_value(item.get("value", {})) for item in items if "key" in item}


def traces_from_otlp_lines(lines: Iterable[str]) -> list[Trace]:
    """Traces from OTLP/JSON ExportTraceServiceRequest lines (the `file` exporter's output), oldest first.

    Blank and malformed lines are skipped: a file still being written may end in half a line.
    """
    by_trace: dict[str, list[Span]] = {}
    for line in lines:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except ValueError:
            continue
        for resource_spans in request.get("resourceSpans", ()):
            resource = _otlp_attributes(resource_spans.get("resource", {}).get("attributes", ()))
            service = str(resource.get("service.name", "?"))
            for scope_spans in resource_spans.get("scopeSpans", ()):
                for item in scope_spans.get("spans", ()):
                    attributes = _otlp_attributes(item.get("attributes", ()))
                    start = int(item.get("startTimeUnixNano", 0))
                    end = int(item.get("endTimeUnixNano", start))
                    status = item.get("status", {}).get("code", 0)
                    http_status = attributes.get("http.response.status_code", attributes.get("http.status_code"))
                    span = Span(
                        trace_id=item["traceId"], span_id=item["spanId"],
                        parent_id=item.get("parentSpanId") or None, service=service, name=item.get("name", ""),
                        start_us=start // 1000, duration_us=max(0, end - start) // 1000,
                        kind=_OTLP_KINDS.get(int(item.get("kind", 0)), ""),
                        error=_is_error("ERROR" if status in (_STATUS_ERROR, "STATUS_CODE_ERROR") else "",
                                        None, http_status),
                        attributes={**resource, **attributes},
                    )
                    by_trace.setdefault(span.trace_id, []).append(span)
    traces = [Trace(trace_id, spans) for trace_id, spans in by_trace.items()]
    traces.sort(key=lambda t: t.start_us)
    return traces
