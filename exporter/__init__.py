"""Wattprint: energy and carbon of AI inference, per model endpoint, for Prometheus."""

__version__ = "0.1.0"
