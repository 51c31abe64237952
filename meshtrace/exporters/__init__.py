"""Span exporters."""
