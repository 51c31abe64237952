"""Trace-context propagation formats (filled by the propagation work)."""
