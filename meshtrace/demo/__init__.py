"""`meshtrace demo`: the Bookinfo mesh of `examples/bookinfo` started, loaded and shown, in one command.

Everything runs as subprocesses (the services under `meshtrace-run`, the sidecars as `meshtrace proxy`, Jaeger
when a binary is found), so this package imports neither the integrations, the proxy nor any web framework.
"""

__all__: list[str] = []
