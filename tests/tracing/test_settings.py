"""Settings: precedence of arguments over MESHTRACE_* over OTEL_* over defaults, and the exact error per bad value."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from meshtrace.errors import ConfigError
from meshtrace.settings import (
    DEFAULT_FILE,
    DEFAULT_OTLP_ENDPOINT,
    DEFAULT_ZIPKIN_ENDPOINT,
    load_settings,
)


def test_defaults_with_an_empty_environment() -> None:
    settings = load_settings(environ={})
    assert settings.service_name == "unknown_service"
    assert settings.exporter == "otlp"
    assert settings.endpoint == DEFAULT_OTLP_ENDPOINT == "http://127.0.0.1:4318/v1/traces"
    assert settings.sampler == "parentbased_always_on"
    assert settings.sampler_ratio == 1.0
    assert settings.propagators is None
    assert dict(settings.resource_attributes) == {"service.name": "unknown_service"}
    assert settings.export_timeout_s == 3.0


@pytest.mark.parametrize(("kwargs", "env", "field", "expected"), [
    # exporter: argument > MESHTRACE_EXPORTER > OTEL_TRACES_EXPORTER > otlp
    ({}, {"OTEL_TRACES_EXPORTER": "zipkin"}, "exporter", "zipkin"),
    ({}, {"OTEL_TRACES_EXPORTER": "zipkin", "MESHTRACE_EXPORTER": "file"}, "exporter", "file"),
    ({"exporter": "console"}, {"MESHTRACE_EXPORTER": "file"}, "exporter", "console"),
    ({}, {"MESHTRACE_EXPORTER": " NONE "}, "exporter", "none"),
    ({}, {"MESHTRACE_EXPORTER": "", "OTEL_TRACES_EXPORTER": "console"}, "exporter", "console"),
    # service name: argument > OTEL_SERVICE_NAME > service.name in OTEL_RESOURCE_ATTRIBUTES
    ({}, {"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs"}, "service_name", "from-attrs"),
    ({}, {"OTEL_RESOURCE_ATTRIBUTES": "service.name=a", "OTEL_SERVICE_NAME": "b"}, "service_name", "b"),
    ({"service_name": "c"}, {"OTEL_SERVICE_NAME": "b"}, "service_name", "c"),
    # OTLP endpoint: argument (base or full) > OTEL_..._TRACES_ENDPOINT (as is) > OTEL_..._ENDPOINT (+/v1/traces)
    ({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "endpoint",
     "http://collector:4318/v1/traces"),
    ({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/prefix/"}, "endpoint",
     "http://collector:4318/prefix/v1/traces"),
    ({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:1", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://b:2/custom"},
     "endpoint", "https://b:2/custom"),
    ({"endpoint": "http://c:3"}, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:2/x"}, "endpoint",
     "http://c:3/v1/traces"),
    ({"endpoint": "http://c:3/v1/traces"}, {}, "endpoint", "http://c:3/v1/traces"),
    # Zipkin endpoint: argument > OTEL_EXPORTER_ZIPKIN_ENDPOINT > default; a bare host gets /api/v2/spans
    ({"exporter": "zipkin"}, {}, "endpoint", DEFAULT_ZIPKIN_ENDPOINT),
    ({"exporter": "zipkin"}, {"OTEL_EXPORTER_ZIPKIN_ENDPOINT": "http://z:9411/api/v2/spans"}, "endpoint",
     "http://z:9411/api/v2/spans"),
    ({"exporter": "zipkin", "endpoint": "http://z:1"}, {"OTEL_EXPORTER_ZIPKIN_ENDPOINT": "http://y:2/x"},
     "endpoint", "http://z:1/api/v2/spans"),
    ({"exporter": "zipkin"}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otlp:4318"}, "endpoint",
     DEFAULT_ZIPKIN_ENDPOINT),
    # file: argument > MESHTRACE_FILE > default
    ({"exporter": "file"}, {}, "endpoint", DEFAULT_FILE),
    ({"exporter": "file"}, {"MESHTRACE_FILE": "/tmp/x.jsonl"}, "endpoint", "/tmp/x.jsonl"),
    ({"exporter": "file", "endpoint": "y.jsonl"}, {"MESHTRACE_FILE": "/tmp/x.jsonl"}, "endpoint", "y.jsonl"),
    ({"exporter": "console"}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:1"}, "endpoint", None),
    # sampler
    ({}, {"OTEL_TRACES_SAMPLER": "always_off"}, "sampler", "always_off"),
    ({"sampler": "ALWAYS_ON"}, {"OTEL_TRACES_SAMPLER": "always_off"}, "sampler", "always_on"),
    ({}, {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}, "sampler_ratio", 0.25),
    ({}, {"OTEL_TRACES_SAMPLER": "traceidratio"}, "sampler_ratio", 1.0),
    ({}, {"MESHTRACE_SAMPLE_RATIO": "0.5"}, "sampler", "parentbased_traceidratio"),
    ({}, {"MESHTRACE_SAMPLE_RATIO": "0.5"}, "sampler_ratio", 0.5),
    ({}, {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1",
          "MESHTRACE_SAMPLE_RATIO": "0.2"}, "sampler_ratio", 0.2),
    # the argument of a non-ratio sampler is ignored, even when it is not a number (as OTel does)
    ({}, {"OTEL_TRACES_SAMPLER": "always_on", "OTEL_TRACES_SAMPLER_ARG": "junk"}, "sampler", "always_on"),
    ({"sampler": ALWAYS_ON}, {"OTEL_TRACES_SAMPLER": "always_off"}, "sampler", ALWAYS_ON),
    # propagators: argument > MESHTRACE_PROPAGATORS > OTEL_PROPAGATORS; `meshtrace` = all, `none` = none
    ({}, {"OTEL_PROPAGATORS": "tracecontext, baggage"}, "propagators", ("tracecontext", "baggage")),
    ({}, {"OTEL_PROPAGATORS": "tracecontext", "MESHTRACE_PROPAGATORS": "b3,b3multi"}, "propagators",
     ("b3", "b3multi")),
    ({"propagators": ["jaeger"]}, {"MESHTRACE_PROPAGATORS": "b3"}, "propagators", ("jaeger",)),
    ({}, {"OTEL_PROPAGATORS": "meshtrace"}, "propagators", None),
    ({}, {"OTEL_PROPAGATORS": "none"}, "propagators", ()),
    ({}, {"OTEL_PROPAGATORS": "b3,B3,b3"}, "propagators", ("b3",)),
    # timeout
    ({}, {"OTEL_EXPORTER_OTLP_TIMEOUT": "7"}, "export_timeout_s", 7.0),
    ({}, {"OTEL_EXPORTER_OTLP_TIMEOUT": "7", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "1.5"}, "export_timeout_s", 1.5),
])
def test_precedence(kwargs: dict[str, Any], env: dict[str, str], field: str, expected: object) -> None:
    assert getattr(load_settings(**kwargs, environ=env), field) == expected


def test_resource_attributes_merge_and_decode() -> None:
    settings = load_settings(
        "svc", resource_attributes={"deployment.environment": "prod"},
        environ={"OTEL_RESOURCE_ATTRIBUTES": "team=a%20b, deployment.environment=dev,,k8s.pod.name=p-1"})
    assert dict(settings.resource_attributes) == {
        "team": "a b", "deployment.environment": "prod", "k8s.pod.name": "p-1", "service.name": "svc"}


def test_propagators_source_names_the_variable() -> None:
    assert load_settings(environ={"OTEL_PROPAGATORS": "b3"}).propagators_source == "OTEL_PROPAGATORS"
    assert load_settings(propagators=["b3"], environ={}).propagators_source == "propagators"


def test_equal_inputs_give_equal_settings() -> None:
    env = {"OTEL_SERVICE_NAME": "a", "MESHTRACE_EXPORTER": "zipkin"}
    assert load_settings(environ=env) == load_settings(environ=dict(env))
    assert load_settings(environ=env) != load_settings("b", environ=env)


@pytest.mark.parametrize(("kwargs", "env", "message"), [
    ({}, {"MESHTRACE_EXPORTER": "otpl"},
     "MESHTRACE_EXPORTER='otpl': unknown exporter; choose one of otlp, zipkin, console, file, none"),
    ({}, {"OTEL_TRACES_EXPORTER": "jaeger"},
     "OTEL_TRACES_EXPORTER='jaeger': unknown exporter; choose one of otlp, zipkin, console, file, none"),
    ({"exporter": "otlp,console"}, {},
     "exporter='otlp,console': unknown exporter; choose one of otlp, zipkin, console, file, none"),
    ({}, {"OTEL_TRACES_SAMPLER": "sometimes"},
     "OTEL_TRACES_SAMPLER='sometimes': unknown sampler; choose one of parentbased_always_on, "
     "parentbased_always_off, parentbased_traceidratio, always_on, always_off, traceidratio"),
    ({"sampler": "ratio"}, {}, "sampler='ratio': unknown sampler; choose one of parentbased_always_on, "
     "parentbased_always_off, parentbased_traceidratio, always_on, always_off, traceidratio"),
    ({"sampler": 0.5}, {}, "sampler=0.5: a sampler is a name or an opentelemetry.sdk.trace.sampling.Sampler"),
    ({}, {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"},
     "OTEL_TRACES_SAMPLER_ARG='half': not a number; a sampling ratio is a number from 0 to 1"),
    ({}, {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"},
     "OTEL_TRACES_SAMPLER_ARG='1.5': out of range; a sampling ratio is a number from 0 to 1"),
    ({}, {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "nan"},
     "OTEL_TRACES_SAMPLER_ARG='nan': out of range; a sampling ratio is a number from 0 to 1"),
    ({}, {"MESHTRACE_SAMPLE_RATIO": "-0.1"},
     "MESHTRACE_SAMPLE_RATIO='-0.1': out of range; a sampling ratio is a number from 0 to 1"),
    ({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"},
     "OTEL_EXPORTER_OTLP_ENDPOINT='collector:4318': not an http(s) URL with a host"),
    ({}, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "ftp://c/v1/traces"},
     "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT='ftp://c/v1/traces': not an http(s) URL with a host"),
    ({"endpoint": "http://c:99999"}, {},
     "endpoint='http://c:99999': bad port (Port out of range 0-65535)"),
    ({"exporter": "zipkin"}, {"OTEL_EXPORTER_ZIPKIN_ENDPOINT": "localhost:9411"},
     "OTEL_EXPORTER_ZIPKIN_ENDPOINT='localhost:9411': not an http(s) URL with a host"),
    ({"exporter": "file", "endpoint": " "}, {}, "endpoint=' ': empty file path"),
    ({}, {"OTEL_PROPAGATORS": "b3,,tracecontext"},
     "OTEL_PROPAGATORS='b3,,tracecontext': empty format name in the list"),
    ({}, {"MESHTRACE_PROPAGATORS": "none,b3"},
     "MESHTRACE_PROPAGATORS='none,b3': 'none' cannot be combined with other formats"),
    ({}, {"OTEL_RESOURCE_ATTRIBUTES": "team=a,oops"},
     "OTEL_RESOURCE_ATTRIBUTES='team=a,oops': entry 'oops' is not key=value"),
    ({}, {"OTEL_RESOURCE_ATTRIBUTES": "=x"}, "OTEL_RESOURCE_ATTRIBUTES='=x': entry '=x' is not key=value"),
    ({"service_name": " "}, {}, "service_name=' ': a service name is a non-empty string"),
    ({}, {"OTEL_EXPORTER_OTLP_TIMEOUT": "10s"}, "OTEL_EXPORTER_OTLP_TIMEOUT='10s': not a number of seconds"),
    ({}, {"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "0"},
     "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT='0': the export timeout must be positive"),
])
def test_bad_values_raise_config_error_naming_the_setting(kwargs: dict[str, Any], env: dict[str, str],
                                                          message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**kwargs, environ=env)
    assert str(caught.value) == message
    assert caught.value.source == message.split("=", 1)[0]


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHTRACE_EXPORTER", "otpl")
    with pytest.raises(ConfigError, match="MESHTRACE_EXPORTER='otpl'"):
        load_settings()
