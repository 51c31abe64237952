"""meshtrace: trace every hop of a Python service mesh in Jaeger, with or without a sidecar."""

from meshtrace._version import __version__
from meshtrace.errors import ConfigError, MeshtraceError
from meshtrace.spans import set_clean_attributes, start_span
from meshtrace.tracing import configure, get_tracer, shutdown, stats

__all__ = [
    "ConfigError",
    "MeshtraceError",
    "__version__",
    "configure",
    "get_tracer",
    "set_clean_attributes",
    "shutdown",
    "start_span",
    "stats",
]
