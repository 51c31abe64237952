"""Context follows the work: threads and `ThreadPoolExecutor` tasks run in the context that started them.

A thread started while a request is being served runs its `run()` with that request's OpenTelemetry
context (its span, baggage, `x-request-id`), so the spans and outbound calls it makes join the request's
trace; a task given to `ThreadPoolExecutor.submit` (and `asyncio`'s `run_in_executor`, which uses it) runs
in the submitter's context, whichever worker picks it. Only the OpenTelemetry context travels, not every
context variable: a framework's request-local state (Flask's `request`) keeps its usual thread rules.

Executor worker threads are started with an empty context, so a worker never keeps the context of the
request that happened to spawn it. Across `await`, asyncio already carries context variables.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType
from typing import Any

from opentelemetry import context as otel_context

from meshtrace.integrations._base import Instrumentor, Switch, log_failure

__all__ = ["ThreadsInstrumentor", "instrument", "instrumentor", "uninstrument"]

_EMPTY = otel_context.Context()


def _run_in(ctx: otel_context.Context, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    token = otel_context.attach(ctx)
    try:
        return fn(*args, **kwargs)
    finally:
        otel_context.detach(token)


def _start_factory(original: Any, switch: Switch) -> Any:
    def start(self: Any) -> None:
        if switch.on:
            try:
                ctx = otel_context.get_current()
                if ctx:
                    # An instance attribute shadows the class's run(), a subclass override included.
                    self.run = functools.partial(_run_in, ctx, self.run)
            except Exception:
                log_failure("threading.start")
        original(self)

    start.__wrapped__ = original  # type: ignore[attr-defined]
    return start


def _submit_factory(original: Any, switch: Switch) -> Any:
    def submit(self: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        if not switch.on:
            return original(self, fn, *args, **kwargs)
        try:
            ctx = otel_context.get_current()
            task = functools.partial(_run_in, ctx, fn) if ctx else fn
            # Workers spawned by this submit must not inherit the submitter's context for their lifetime.
            token = otel_context.attach(_EMPTY) if ctx else None
        except Exception:
            log_failure("threading.submit")
            return original(self, fn, *args, **kwargs)
        try:
            return original(self, task, *args, **kwargs)
        finally:
            if token is not None:
                otel_context.detach(token)

    submit.__wrapped__ = original  # type: ignore[attr-defined]
    return submit


class ThreadsInstrumentor(Instrumentor):
    name = "threading"
    modules = ("threading", "concurrent.futures.thread")

    def _apply(self, module: ModuleType) -> None:
        if module.__name__ == "threading":
            self.patch(module.Thread, "start", _start_factory)
        else:
            self.patch(module.ThreadPoolExecutor, "submit", _submit_factory)


instrumentor = ThreadsInstrumentor()


def instrument() -> None:
    """Carry the OpenTelemetry context into threads and executor tasks (idempotent)."""
    instrumentor.instrument()


def uninstrument() -> None:
    instrumentor.uninstrument()
