"""Auto-instrumentation for web frameworks and HTTP clients; each module patches one library."""
