"""``wattprint report``: a period's energy and emissions per group (cluster, namespace, endpoint,
model), read from Prometheus's HTTP API (the hourly rollups when they cover the period, the raw
counters otherwise), as Markdown, CSV, JSON or HTML.

The parts: ``period`` (--from/--to), ``prom`` (the HTTP client), ``queries`` (the PromQL, the
choice of source, gathering), ``model`` (rows, totals, ratios: pure), ``render`` and ``html``
(the formats: pure)."""

from __future__ import annotations

from typing import Any

# the options, defined here with no import at all: the command line lists them in --help, and
# `wattprint serve` builds the same parser (the HTTP client would load ssl, ~4 MB, into the daemon)
GROUP_LABELS = ("cluster", "namespace", "endpoint", "model")
ALLOWED_BY = GROUP_LABELS + ("instance",)
DEFAULT_BY = GROUP_LABELS
SOURCES = ("auto", "rollups", "raw")  # --source: the rollups when they cover the period, or as asked
OUTPUTS = ("markdown", "csv", "json", "html")


def __getattr__(name: str) -> Any:
    """report(), parse_by() and the error classes, from .run on first use."""
    import importlib

    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(importlib.import_module(f"{__name__}.run"), name)
