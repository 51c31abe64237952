"""The folder `meshtrace-run` puts first on PYTHONPATH: it holds only the `sitecustomize` that sets up tracing."""
