"""meshtrace: trace every hop of a Python service mesh in Jaeger, with or without a sidecar."""

from meshtrace._version import __version__
from meshtrace.errors import ConfigError, MeshtraceError
from meshtrace.tracing import configure, get_tracer, shutdown, stats

__all__ = ["ConfigError", "MeshtraceError", "__version__", "configure", "get_tracer", "shutdown", "stats"]
