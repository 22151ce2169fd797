"""The statement, end to end: parse the period and options, gather from Prometheus, render."""

from __future__ import annotations

import time

from .html import render_html
from .model import ALLOWED_BY, DEFAULT_BY
from .period import OptionError, PeriodError, parse_period
from .prom import Client, PrometheusError
from .queries import SOURCES, ReportError, gather
from .render import markdown, render_csv, render_json

from . import OUTPUTS  # noqa: E402 - the package's option lists, defined without the HTTP client

RENDERERS = {"markdown": markdown, "csv": render_csv, "json": render_json, "html": render_html}
assert tuple(RENDERERS) == OUTPUTS


def parse_by(text: str) -> tuple[str, ...]:
    """``cluster,namespace`` → ("cluster", "namespace"); unknown or repeated labels refused."""
    by = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in by if p not in ALLOWED_BY]
    if bad or not by or len(set(by)) != len(by):
        why = f"unknown label {', '.join(map(repr, bad))}" if bad else "empty or repeated labels"
        raise OptionError(f"--by={text!r}: {why}; choose from {', '.join(ALLOWED_BY)}")
    return by


def report(url: str, start: str = "-30d", end: str = "now", by: str = ",".join(DEFAULT_BY),
           output: str = "markdown", source: str = "auto", exclude_catch_all: bool = False,
           timeout: float = 30.0, now: float | None = None, cluster_label: str = "cluster") -> str:
    """The statement as text; raises OptionError (a bad option), ReportError (nothing to report)
    or PrometheusError (Prometheus unreachable or refusing)."""
    if output not in RENDERERS:
        raise OptionError(f"--output={output!r}: choose from {', '.join(OUTPUTS)}")
    if source not in SOURCES:
        raise OptionError(f"--source={source!r}: choose from {', '.join(SOURCES)}")
    if not cluster_label.isidentifier() or not cluster_label.isascii():
        raise OptionError(f"--cluster-label={cluster_label!r}: not a Prometheus label name")
    period = parse_period(start, end, time.time() if now is None else now)
    statement = gather(Client(url, timeout, cluster_label=cluster_label), period, parse_by(by), source, exclude_catch_all,
                       with_daily=output == "html")
    return RENDERERS[output](statement)


__all__ = ["OUTPUTS", "OptionError", "PeriodError", "PrometheusError", "ReportError", "SOURCES", "parse_by", "report"]
