"""Cumulative engine counters → increments that stay monotonic across engine restarts.

Pure and stateful: no clock, no I/O. The caller keys each series by what outlives an engine
process (endpoint and model, not a pid), so a restart shows up as a counter going backwards.

Rules, per key and counter name:
- **First sight: increment 0.** History from before the exporter saw a counter is not counted:
  it happened before this exporter's own counters began, and counting it would put a lifetime
  of requests into one sample. This also holds for a counter first seen under a known key (a
  family that appears late, or was malformed until now): its value may hold history too. The
  cost is what a lazily created counter (TGI, TRT-LLM, SGLang create theirs on the first
  finished request) counted before its first scrape, at most one scrape interval per engine.
- **Backwards = restart: increment = the new value**, as Prometheus ``rate()`` treats a counter
  reset; ``resets[key]`` counts the updates in which any counter of the key went backwards.
- **Absent, None, NaN, infinite or negative: no increment**, and the last good value is kept,
  so a counter missing from one scrape neither resets nor double-counts when it returns.
Every increment is finite and ≥ 0.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping


class Normaliser:
    def __init__(self) -> None:
        self._last: dict[Hashable, dict[str, float]] = {}
        self.resets: Counter[Hashable] = Counter()

    def update(self, key: Hashable, counters: Mapping[str, float | None]) -> dict[str, float]:
        """Increments since the last update of ``key``, for each counter given a usable value."""
        last = self._last.setdefault(key, {})
        increments: dict[str, float] = {}
        reset = False
        for name, value in counters.items():
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                continue
            value = float(value)
            previous = last.get(name)
            if previous is None:
                increments[name] = 0.0
            elif value >= previous:
                increments[name] = value - previous
            else:
                increments[name] = value
                reset = True
            last[name] = value
        if reset:
            self.resets[key] += 1
        return increments

    def __len__(self) -> int:
        """Keys held (each a (workload, url, model) of a live target)."""
        return len(self._last)

    def forget(self, key: Hashable) -> None:
        """Drop the state of a key that is gone (an endpoint removed for good)."""
        self._last.pop(key, None)
        self.resets.pop(key, None)
