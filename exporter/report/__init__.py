"""``wattprint report``: a period's energy and emissions per group (cluster, namespace, endpoint,
model), read from Prometheus's HTTP API (the hourly rollups when they cover the period, the raw
counters otherwise), as Markdown, CSV, JSON or HTML.

The parts: ``period`` (--from/--to), ``prom`` (the HTTP client), ``queries`` (the PromQL, the
choice of source, gathering), ``model`` (rows, totals, ratios: pure), ``render`` and ``html``
(the formats: pure)."""

from __future__ import annotations

from typing import Any

# the options, importable without the HTTP client (the command line lists them in --help, and
# `wattprint serve` builds the same parser: urllib.request would load ssl, ~4 MB, into the daemon)
from .model import ALLOWED_BY, DEFAULT_BY, SOURCES

OUTPUTS = ("markdown", "csv", "json", "html")


def __getattr__(name: str) -> Any:
    """report(), parse_by() and the error classes, from .run on first use."""
    import importlib

    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(importlib.import_module(f"{__name__}.run"), name)
