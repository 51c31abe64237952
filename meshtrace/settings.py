"""Resolve `configure()` arguments and environment variables into one validated, immutable Settings.

Precedence, for every setting: explicit argument > meshtrace's own `MESHTRACE_*` variable > the standard
`OTEL_*` variable > default. Every invalid value raises ConfigError naming the argument or variable and the
value, so a typo in a deployment manifest fails loudly at start-up instead of silently dropping traces.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from opentelemetry.sdk.trace.sampling import Sampler

from meshtrace.errors import ConfigError

__all__ = [
    "DEFAULT_FILE",
    "DEFAULT_OTLP_ENDPOINT",
    "DEFAULT_ZIPKIN_ENDPOINT",
    "EXPORTERS",
    "SAMPLERS",
    "Settings",
    "load_settings",
]

#: Exporter names, in the order error messages list them; the first is the default.
EXPORTERS: tuple[str, ...] = ("otlp", "zipkin", "console", "file", "none")
#: OpenTelemetry sampler names (OTEL_TRACES_SAMPLER); the default is parentbased_always_on.
SAMPLERS: tuple[str, ...] = (
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
    "always_on",
    "always_off",
    "traceidratio",
)
RATIO_SAMPLERS = frozenset({"traceidratio", "parentbased_traceidratio"})

# 127.0.0.1 rather than OTel's `localhost`: Jaeger and collectors commonly bind IPv4 loopback only, and
# `localhost` may resolve to ::1 first.
DEFAULT_OTLP_ENDPOINT = "http://127.0.0.1:4318/v1/traces"
DEFAULT_ZIPKIN_ENDPOINT = "http://127.0.0.1:9411/api/v2/spans"
DEFAULT_FILE = "meshtrace-spans.jsonl"
OTLP_TRACES_PATH = "/v1/traces"
ZIPKIN_SPANS_PATH = "/api/v2/spans"
# The OTLP exporter retries until this deadline per batch; OTel's 10 s default makes exit slow when the
# backend is down. OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT still wins (in seconds, as OTel Python reads it).
DEFAULT_EXPORT_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Settings:
    """Everything `configure()` needs, resolved and validated; equal Settings mean the same set-up."""

    service_name: str
    exporter: str
    #: Full URL for otlp (…/v1/traces) and zipkin (…/api/v2/spans), a file path for file, None otherwise.
    endpoint: str | None
    #: A sampler name from SAMPLERS, or a user-supplied Sampler instance.
    sampler: str | Sampler
    sampler_ratio: float
    #: Formats for MeshPropagator; None = its default (all of them).
    propagators: tuple[str, ...] | None
    resource_attributes: tuple[tuple[str, str], ...]
    export_timeout_s: float
    #: Which argument or variable the propagator list came from, for error messages.
    propagators_source: str | None = field(default=None, compare=False)


def _error(name: str, value: object, why: str) -> ConfigError:
    error = ConfigError(f"{name}={value!r}: {why}")
    error.source = name
    return error


def _env(environ: Mapping[str, str], name: str) -> str | None:
    """An environment variable, with an empty or blank value treated as unset (as OTel does)."""
    value = environ.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _first(environ: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    for name in names:
        value = _env(environ, name)
        if value is not None:
            return name, value
    return None


def _exporter(explicit: str | None, environ: Mapping[str, str]) -> str:
    if explicit is not None:
        name, raw = "exporter", explicit
    else:
        found = _first(environ, "MESHTRACE_EXPORTER", "OTEL_TRACES_EXPORTER")
        if found is None:
            return EXPORTERS[0]
        name, raw = found
    value = raw.strip().lower()
    if value not in EXPORTERS:
        raise _error(name, raw, f"unknown exporter; choose one of {', '.join(EXPORTERS)}")
    return value


def _url(name: str, raw: str) -> urllib.parse.SplitResult:
    parts = urllib.parse.urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _error(name, raw, "not an http(s) URL with a host")
    try:
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError as exc:
        raise _error(name, raw, f"bad port ({exc})") from exc
    return parts


def _with_path(parts: urllib.parse.SplitResult, path: str) -> str:
    """Append `path` unless the URL already ends with it."""
    if parts.path.rstrip("/").endswith(path):
        return urllib.parse.urlunsplit(parts)
    return urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/") + path))


def _endpoint(exporter: str, explicit: str | None, environ: Mapping[str, str]) -> str | None:
    if exporter == "otlp":
        # endpoint= is read like OTEL_EXPORTER_OTLP_ENDPOINT (a base URL, /v1/traces appended) but a URL that
        # already ends with /v1/traces is taken as is, so both spellings work.
        if explicit is not None:
            return _with_path(_url("endpoint", explicit), OTLP_TRACES_PATH)
        if (raw := _env(environ, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) is not None:
            # Per the OTel spec the signal-specific variable is used exactly as given.
            return urllib.parse.urlunsplit(_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raw))
        if (raw := _env(environ, "OTEL_EXPORTER_OTLP_ENDPOINT")) is not None:
            return _with_path(_url("OTEL_EXPORTER_OTLP_ENDPOINT", raw), OTLP_TRACES_PATH)
        return DEFAULT_OTLP_ENDPOINT
    if exporter == "zipkin":
        found = ("endpoint", explicit) if explicit is not None else _first(environ, "OTEL_EXPORTER_ZIPKIN_ENDPOINT")
        if found is None:
            return DEFAULT_ZIPKIN_ENDPOINT
        parts = _url(*found)
        # A bare host:port gets Zipkin's intake path; any other path is the user's (a proxy, a gateway).
        if parts.path in ("", "/"):
            return _with_path(parts, ZIPKIN_SPANS_PATH)
        return urllib.parse.urlunsplit(parts)
    if exporter == "file":
        found = ("endpoint", explicit) if explicit is not None else _first(environ, "MESHTRACE_FILE")
        if found is None:
            return DEFAULT_FILE
        name, raw = found
        if not raw.strip():
            raise _error(name, raw, "empty file path")
        return raw
    return None


def _ratio(name: str, raw: str) -> float:
    try:
        ratio = float(raw)
    except ValueError:
        raise _error(name, raw, "not a number; a sampling ratio is a number from 0 to 1") from None
    if not 0.0 <= ratio <= 1.0:  # also rejects nan
        raise _error(name, raw, "out of range; a sampling ratio is a number from 0 to 1")
    return ratio


def _sampler(explicit: str | Sampler | None, environ: Mapping[str, str]) -> tuple[str | Sampler, float]:
    ratio_var = _first(environ, "MESHTRACE_SAMPLE_RATIO", "OTEL_TRACES_SAMPLER_ARG")
    if isinstance(explicit, Sampler):
        return explicit, 1.0
    if explicit is not None:
        name, raw = "sampler", explicit
    elif (found := _first(environ, "OTEL_TRACES_SAMPLER")) is not None:
        name, raw = found
    elif (ratio_only := _first(environ, "MESHTRACE_SAMPLE_RATIO")) is not None:
        # MESHTRACE_SAMPLE_RATIO alone is the short way to say parentbased_traceidratio.
        return "parentbased_traceidratio", _ratio(*ratio_only)
    else:
        return SAMPLERS[0], 1.0
    if not isinstance(raw, str):
        raise _error(name, raw, "a sampler is a name or an opentelemetry.sdk.trace.sampling.Sampler")
    value = raw.strip().lower()
    if value not in SAMPLERS:
        raise _error(name, raw, f"unknown sampler; choose one of {', '.join(SAMPLERS)}")
    if value in RATIO_SAMPLERS and ratio_var is not None:
        return value, _ratio(*ratio_var)
    return value, 1.0


def _propagators(explicit: Sequence[str] | None,
                 environ: Mapping[str, str]) -> tuple[tuple[str, ...] | None, str | None]:
    if explicit is not None:
        if isinstance(explicit, str):
            name, items = "propagators", explicit.split(",")
        else:
            name, items = "propagators", list(explicit)
    else:
        found = _first(environ, "MESHTRACE_PROPAGATORS", "OTEL_PROPAGATORS")
        if found is None:
            return None, None
        name, raw = found
        items = raw.split(",")
    formats: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise _error(name, item, "a propagator format is a name such as tracecontext or b3multi")
        value = item.strip().lower()
        if not value:
            raise _error(name, ",".join(map(str, items)), "empty format name in the list")
        if value not in formats:
            formats.append(value)
    if formats == ["meshtrace"]:
        # OTEL_PROPAGATORS=meshtrace names our composite (its entry point): every format it knows.
        return None, name
    if "none" in formats:
        if len(formats) > 1:
            raise _error(name, ",".join(items), "'none' cannot be combined with other formats")
        return (), name
    return tuple(formats), name


def _resource_attributes(explicit: Mapping[str, str] | None, environ: Mapping[str, str]) -> dict[str, str]:
    attributes: dict[str, str] = {}
    raw = _env(environ, "OTEL_RESOURCE_ATTRIBUTES")
    if raw is not None:
        # W3C-baggage-like `key=value,key2=value2`, values percent-decoded (OTel resource SDK spec).
        for item in raw.split(","):
            if not item.strip():
                continue
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise _error("OTEL_RESOURCE_ATTRIBUTES", raw, f"entry {item.strip()!r} is not key=value")
            attributes[key.strip()] = urllib.parse.unquote(value.strip())
    for key, value in (explicit or {}).items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise _error("resource_attributes", {key: value}, "keys and values must be non-empty strings")
        attributes[key] = value
    return attributes


def _service_name(explicit: str | None, environ: Mapping[str, str], attributes: Mapping[str, str]) -> str:
    if explicit is not None:
        if not isinstance(explicit, str) or not explicit.strip():
            raise _error("service_name", explicit, "a service name is a non-empty string")
        return explicit.strip()
    return _env(environ, "OTEL_SERVICE_NAME") or attributes.get("service.name") or "unknown_service"


def _timeout(environ: Mapping[str, str]) -> float:
    found = _first(environ, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
    if found is None:
        return DEFAULT_EXPORT_TIMEOUT_S
    name, raw = found
    try:
        value = float(raw)
    except ValueError:
        raise _error(name, raw, "not a number of seconds") from None
    if not value > 0:
        raise _error(name, raw, "the export timeout must be positive")
    return value


def load_settings(
    service_name: str | None = None,
    *,
    exporter: str | None = None,
    endpoint: str | None = None,
    sampler: str | Sampler | None = None,
    propagators: Sequence[str] | None = None,
    resource_attributes: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Validate the arguments of `configure()` against the environment; raise ConfigError on a bad value."""
    env = os.environ if environ is None else environ
    exporter_name = _exporter(exporter, env)
    attributes = _resource_attributes(resource_attributes, env)
    service = _service_name(service_name, env, attributes)
    attributes["service.name"] = service
    sampler_value, ratio = _sampler(sampler, env)
    formats, formats_source = _propagators(propagators, env)
    return Settings(
        service_name=service,
        exporter=exporter_name,
        endpoint=_endpoint(exporter_name, endpoint, env),
        sampler=sampler_value,
        sampler_ratio=ratio,
        propagators=formats,
        resource_attributes=tuple(sorted(attributes.items())),
        export_timeout_s=_timeout(env),
        propagators_source=formats_source,
    )
