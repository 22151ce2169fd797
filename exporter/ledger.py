"""Monotonic counters per label set, with a cardinality cap and a size cap.

Every joule the sampler measures is added here exactly once. Counters only ever grow: a negative
increment is a bug and raises. Series are kept for the exporter's lifetime (energy of processes
and pods that ended stays), and label sets beyond ``max_series`` per metric, or beyond
``max_label_bytes`` of label values over every series, fold into one overflow series whose fold
count is itself exposed, so sums stay whole. A label value is at most ``LABEL_MAX_BYTES``
(exposition.cap_label): the exposition's size is bounded, not only its series count.
"""

from __future__ import annotations

import math
from collections import defaultdict

from . import catalogue
from .exposition import cap_labels

OVERFLOW = "overflow"
FOLD_TRACK_MAX = 100_000  # distinct folded label sets remembered per metric (their hashes)
MAX_LABEL_BYTES = 4 * 1024 * 1024  # label bytes of every series together; past it, new ones fold


class Ledger:
    def __init__(self, max_series: int = 2000, max_label_bytes: int = MAX_LABEL_BYTES) -> None:
        self.max_series = max_series
        self.max_label_bytes = max_label_bytes
        self.label_bytes = 0  # of every series held: with LABEL_MAX_BYTES a value, the exposition's size is bounded
        self.counters: dict[str, dict[tuple[str, ...], float]] = defaultdict(dict)
        self.folded: dict[str, int] = defaultdict(int)   # distinct label sets folded, per metric
        self._folded_seen: dict[str, set[int]] = defaultdict(set)
        self._pending: list[tuple[str, tuple[str, ...], float]] | None = None

    def begin(self) -> None:
        """Stage increments until commit(): a sample lands whole or not at all."""
        self._pending = []

    def commit(self) -> None:
        pending, self._pending = self._pending or [], None
        for metric, labels, value in pending:
            self.add(metric, labels, value)

    def rollback(self) -> None:
        self._pending = None

    def add(self, metric: str, labels: tuple[str, ...], value: float) -> None:
        """Add ``value`` (≥ 0, finite) to ``metric{labels}`` (labels in catalogue order)."""
        if not value:
            return
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"{metric}{labels}: counter increment must be finite and >= 0, got {value}")
        if self._pending is not None:
            self._pending.append((metric, labels, value))
            return
        series = self.counters[metric]
        if labels not in series:
            labels = cap_labels(labels)  # a 120 KB model name is not kept, nor exposed
        if labels not in series and (len(series) >= self.max_series
                                     or self.label_bytes >= self.max_label_bytes):
            seen = self._folded_seen[metric]
            h = hash(labels)
            if h not in seen:  # count label sets, not increments (past FOLD_TRACK_MAX: every new one)
                self.folded[metric] += 1
                if len(seen) < FOLD_TRACK_MAX:
                    seen.add(h)
            labels = self._overflow_labels(metric, labels)
        if labels not in series:
            self.label_bytes += sum(len(v) for v in labels)
        series[labels] = series.get(labels, 0.0) + value

    def ensure(self, metric: str, labels: tuple[str, ...]) -> None:
        """Create a series at 0 so it is visible before its first increment."""
        self.counters[metric].setdefault(labels, 0.0)

    @staticmethod
    def _overflow_labels(metric: str, labels: tuple[str, ...]) -> tuple[str, ...]:
        names = catalogue.get(metric).labels
        return tuple(OVERFLOW if n == "endpoint" else ("" if n in ("namespace", "model", "pod", "pid", "comm")
                                                        else v) for n, v in zip(names, labels))

    def total(self, metric: str) -> float:
        return math.fsum(self.counters.get(metric, {}).values())

    def contribute(self, snap: "object") -> None:
        """Every counter, and the cap's fold counts, into the sample's snapshot."""
        values = snap.values  # type: ignore[attr-defined]
        for metric, series in self.counters.items():
            values.setdefault(metric, {}).update(series)
        for metric, n in self.folded.items():
            values.setdefault("attribution_folded_series_total", {})[(metric,)] = float(n)

    def snapshot(self) -> dict[str, dict[tuple[str, ...], float]]:
        return {m: dict(s) for m, s in self.counters.items()}
