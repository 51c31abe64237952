"""meshtrace: trace every hop of a Python service mesh in Jaeger, with or without a sidecar."""

from meshtrace._version import __version__
from meshtrace.errors import ConfigError, MeshtraceError

__all__ = ["ConfigError", "MeshtraceError", "__version__"]
