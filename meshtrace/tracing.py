"""Tracer set-up: `configure()` installs the global TracerProvider and propagator once; `shutdown()` flushes.

Theory of operation. OpenTelemetry allows one global TracerProvider per process, so configure() is
idempotent: the first call validates the settings, builds sampler, resource, exporter and processor, installs
them and registers `shutdown` with atexit; every later call still validates its arguments (a bad value is a
bug wherever it appears) but returns the installed provider unchanged, logging at debug level when its
settings differ from the installed ones. Nothing is installed until every setting has been validated, so a
ConfigError leaves the process untouched.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import Sampler

from meshtrace import counters
from meshtrace._version import __version__
from meshtrace.errors import ConfigError
from meshtrace.exporters import build_exporter
from meshtrace.processor import DroppingBatchSpanProcessor
from meshtrace.propagation import DEFAULT_FORMATS, MeshPropagator
from meshtrace.sampling import HintedSampler, build_sampler
from meshtrace.settings import Settings, load_settings

__all__ = ["configure", "get_tracer", "shutdown", "stats"]

logger = logging.getLogger("meshtrace")

DEFAULT_SHUTDOWN_TIMEOUT_S = 5.0


@dataclass
class _Installed:
    settings: Settings
    provider: TracerProvider
    processor: DroppingBatchSpanProcessor | None
    shut_down: bool = False


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.installed: _Installed | None = None
        self.atexit_registered = False


_state = _State()


def configure(
    service_name: str | None = None,
    *,
    exporter: str | None = None,
    endpoint: str | None = None,
    sampler: str | Sampler | None = None,
    propagators: Sequence[str] | None = None,
    resource_attributes: Mapping[str, str] | None = None,
) -> TracerProvider:
    """Install meshtrace's TracerProvider, exporter and propagator; return the provider.

    Explicit arguments win over environment variables (see meshtrace.settings). Invalid settings raise
    ConfigError naming the argument or variable and the value. A second call returns the provider already
    installed (the global provider cannot be replaced) after validating its own arguments.
    """
    settings = load_settings(service_name, exporter=exporter, endpoint=endpoint, sampler=sampler,
                             propagators=propagators, resource_attributes=resource_attributes)
    with _state.lock:
        if (installed := _state.installed) is not None:
            if settings != installed.settings:
                logger.debug("meshtrace.configure() called again with different settings; keeping the "
                             "installed ones (%s), ignoring %s", installed.settings, settings)
            return installed.provider

        propagator = _build_propagator(settings)
        sampler_obj = settings.sampler if isinstance(settings.sampler, Sampler) else build_sampler(
            settings.sampler, settings.sampler_ratio)
        resource = Resource.create({
            **dict(settings.resource_attributes),
            "telemetry.distro.name": "meshtrace",
            "telemetry.distro.version": __version__,
        })
        current = trace.get_tracer_provider()
        processor: DroppingBatchSpanProcessor | None = None
        if isinstance(current, TracerProvider):
            # Someone (opentelemetry-instrument, the app) installed an SDK provider first. It cannot be
            # replaced; keep it rather than export every span twice, and say so.
            logger.warning("meshtrace.configure(): an OpenTelemetry TracerProvider is already installed; "
                           "meshtrace keeps it (its sampler and exporters) and only sets the propagator")
            provider = current
        else:
            provider = TracerProvider(sampler=HintedSampler(sampler_obj), resource=resource,
                                      shutdown_on_exit=False)
            span_exporter = build_exporter(settings)
            if span_exporter is not None:
                processor = DroppingBatchSpanProcessor(span_exporter)
                provider.add_span_processor(processor)
            trace.set_tracer_provider(provider)
        _install_textmap(propagator)
        _state.installed = _Installed(settings, provider, processor)
        if not _state.atexit_registered:
            atexit.register(_shutdown_at_exit)
            _state.atexit_registered = True
        logger.debug("meshtrace configured: %s", settings)
        return provider


def _build_propagator(settings: Settings) -> TextMapPropagator:
    # Formats always passed explicitly: settings already applied MESHTRACE_PROPAGATORS > OTEL_PROPAGATORS.
    formats = list(settings.propagators) if settings.propagators is not None else list(DEFAULT_FORMATS)
    try:
        return MeshPropagator(formats)
    except ConfigError as exc:
        # Re-word to name the argument or variable the list really came from.
        message = str(exc)
        if exc.source and message.startswith(f"{exc.source}: "):
            message = message[len(exc.source) + 2:]
        source = settings.propagators_source or "propagators"
        error = ConfigError(f"{source}={','.join(formats)!r}: {message}")
        error.source = source
        raise error from exc


def _install_textmap(propagator: TextMapPropagator) -> None:
    if "opentelemetry.propagate" not in sys.modules:
        # On first import OTel resolves OTEL_PROPAGATORS to entry points and raises for any name no installed
        # package provides (b3multi without opentelemetry-propagator-b3, ...). MeshPropagator implements those
        # formats itself and replaces that default right away, so import with the variable hidden.
        saved = os.environ.pop("OTEL_PROPAGATORS", None)
        try:
            importlib.import_module("opentelemetry.propagate")
        finally:
            if saved is not None:
                os.environ["OTEL_PROPAGATORS"] = saved
    from opentelemetry.propagate import set_global_textmap

    set_global_textmap(propagator)


def shutdown(timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S) -> None:
    """Export what is queued (waiting at most about `timeout_s`) and shut the provider down; idempotent.

    Also runs at interpreter exit. Spans ended afterwards are not exported.
    """
    with _state.lock:
        installed = _state.installed
        if installed is None or installed.shut_down:
            return
        installed.shut_down = True
    if installed.processor is not None:
        installed.processor.shutdown(max(int(timeout_s * 1000), 0))
    installed.provider.shutdown()


def _shutdown_at_exit() -> None:
    try:
        shutdown()
    except Exception:  # never turn a clean exit into a traceback
        logger.debug("meshtrace: shutdown at exit failed", exc_info=True)


def get_tracer(name: str) -> trace.Tracer:
    """A tracer from the global provider (usable before configure(): it starts working once configured)."""
    return trace.get_tracer(name)


def stats() -> dict[str, int]:
    """Export counters of this process: spans_exported, spans_dropped, export_failures, spans_failed_export."""
    return counters.snapshot()
