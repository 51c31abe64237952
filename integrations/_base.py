"""The base every integration shares: lazy, idempotent, undoable patching that never breaks the host.

Theory of operation. `instrument()` registers a wrapt post-import hook per target module, so the patch is
applied the moment the library is imported (or at once if it already is), whatever the import order.
Each patch replaces one class attribute with a wrapper made by a factory that receives the original and a
`Switch`. `uninstrument()` puts the original back when the attribute still holds our wrapper; when someone
wrapped over us since (another instrumentation), the attribute is left alone and the switch is turned off,
so our wrapper becomes a pass-through. A switch never turns back on: a later `instrument()` makes a fresh
wrapper with a fresh switch, so a stale wrapper buried under someone else's can never make a second span.

Wrappers guard their own work with `guard_failure()`: telemetry code that raises is logged (once per site,
then counted) and the original call proceeds untouched.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import wrapt

__all__ = ["Instrumentor", "Switch", "failures", "log_failure", "logger"]

logger = logging.getLogger("meshtrace.integrations")

_failures: dict[str, int] = {}
_failures_lock = threading.Lock()


def log_failure(where: str) -> None:
    """Record a failure of telemetry code inside a wrapper; call from an `except` block.

    The first failure at each site is logged with its traceback, later ones only counted (a broken
    wrapper on a hot path must not flood the log).
    """
    with _failures_lock:
        count = _failures.get(where, 0) + 1
        _failures[where] = count
    if count == 1:
        logger.warning("meshtrace: telemetry failed in %s; the call proceeds untraced", where, exc_info=True)
    else:
        logger.debug("meshtrace: telemetry failed in %s (%d times)", where, count, exc_info=True)


def failures() -> dict[str, int]:
    """How many times telemetry failed, per wrapper site (for tests and diagnostics)."""
    with _failures_lock:
        return dict(_failures)


class Switch:
    """On while the patch that owns it is installed; wrappers pass straight through when it is off."""

    __slots__ = ("on",)

    def __init__(self) -> None:
        self.on = True


@dataclass
class _Patch:
    owner: Any
    name: str
    original: Any
    wrapper: Any
    switch: Switch
    had_own: bool


WrapperFactory = Callable[[Any, Switch], Any]


class Instrumentor:
    """Base of every integration. Subclasses set `name` and `modules` and implement `_apply(module)`.

    `_apply` is called once per target module after it is imported, and patches with `self.patch()`.
    Extra undo steps (signal receivers, …) go through `self.on_undo()`.
    """

    name: str = "base"
    #: Modules whose import triggers `_apply`; the library is never imported by meshtrace itself.
    modules: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._wanted = False
        self._hooked: set[str] = set()
        self._applied: set[str] = set()
        self._patches: list[_Patch] = []
        self._undo: list[Callable[[], None]] = []

    @property
    def is_instrumented(self) -> bool:
        return self._wanted

    def instrument(self) -> None:
        """Patch the library now if imported, else the moment it is; calling it again does nothing."""
        with self._lock:
            if self._wanted:
                return
            self._wanted = True
            self._configure()
            for module_name in self.modules:
                if module_name in self._hooked:
                    module = sys.modules.get(module_name)
                    if module is not None:
                        self._on_import(module)
                    continue
                self._hooked.add(module_name)
                # Runs the hook at once when the module is already imported.
                wrapt.register_post_import_hook(self._on_import, module_name)

    def uninstrument(self) -> None:
        """Restore the original behaviour; calling it again (or before instrument()) does nothing."""
        with self._lock:
            if not self._wanted:
                return
            self._wanted = False
            for patch in reversed(self._patches):
                patch.switch.on = False
                try:
                    current = patch.owner.__dict__.get(patch.name)
                    if current is patch.wrapper:
                        if patch.had_own:
                            setattr(patch.owner, patch.name, patch.original)
                        else:
                            delattr(patch.owner, patch.name)
                except Exception:
                    log_failure(f"{self.name}.uninstrument")
            self._patches.clear()
            for undo in reversed(self._undo):
                try:
                    undo()
                except Exception:
                    log_failure(f"{self.name}.uninstrument")
            self._undo.clear()
            self._applied.clear()

    # -- for subclasses -------------------------------------------------------------------------------

    def _configure(self) -> None:
        """Read settings (environment) at instrument() time; optional."""

    def _apply(self, module: ModuleType) -> None:
        raise NotImplementedError

    def patch(self, owner: Any, name: str, factory: WrapperFactory) -> Switch:
        """Replace `owner.name` with `factory(original, switch)`; undone by uninstrument()."""
        had_own = name in getattr(owner, "__dict__", {})
        original = owner.__dict__[name] if had_own else getattr(owner, name)
        switch = Switch()
        wrapper = factory(original, switch)
        setattr(owner, name, wrapper)
        self._patches.append(_Patch(owner, name, original, wrapper, switch, had_own))
        return switch

    def on_undo(self, undo: Callable[[], None]) -> None:
        self._undo.append(undo)

    def _on_import(self, module: ModuleType) -> None:
        with self._lock:
            if not self._wanted or module.__name__ in self._applied:
                return
            self._applied.add(module.__name__)
            try:
                self._apply(module)
            except Exception:
                log_failure(f"{self.name}.instrument")
