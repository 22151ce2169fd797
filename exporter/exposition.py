"""Render one consistent snapshot to the Prometheus text format, once per sample.

The scrape handler only returns these bytes (and a gzip copy made at the same time): no sensor
or network I/O, no rendering, on the scrape path.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from typing import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from . import catalogue

Series = dict[tuple[str, ...], float]


@dataclass
class Snapshot:
    """Everything one scrape shows, keyed by catalogue short name (no ``wattprint_`` prefix)."""
    values: dict[str, Series] = field(default_factory=dict)

    def set(self, metric: str, labels: tuple[str, ...], value: float) -> None:
        self.values.setdefault(metric, {})[labels] = value


class _SnapshotCollector:
    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        for short, series in self.snap.values.items():
            m = catalogue.get(short)
            names = list(m.labels)
            if m.type == "counter":
                fam: Metric = CounterMetricFamily(m.family, m.help, labels=names)
            elif m.type == "info":
                fam = InfoMetricFamily(m.family, m.help, labels=names)
                for labels in series:
                    fam.add_metric(list(labels), {})
                yield fam
                continue
            else:
                fam = GaugeMetricFamily(m.family, m.help, labels=names)
            for labels, value in series.items():
                fam.add_metric(list(labels), value)
            yield fam


class Renderer:
    """Holds the rendered bytes of the latest snapshot; swapped atomically per sample."""

    def __init__(self) -> None:
        # the exporter's own CPU and memory (process_cpu_seconds_total, process_resident_memory_bytes)
        self._process = ProcessCollector(namespace="", registry=None)
        self.current: tuple[bytes, bytes] = (b"", b"")  # (text, gzip of text)

    def render(self, snap: Snapshot) -> None:
        reg = CollectorRegistry(auto_describe=False)
        reg.register(_SnapshotCollector(snap))
        reg.register(self._process)
        text = generate_latest(reg)
        gz = gzip.compress(text, compresslevel=5)
        self.current = (text, gz)  # one assignment: readers see the old pair or the new one
