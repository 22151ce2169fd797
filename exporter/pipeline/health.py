"""Collector health: errors counted by kind, up/down shown, logged once per change of state."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("exporter.sampler")


class Health:
    def __init__(self, ledger: Any) -> None:
        self.ledger = ledger
        self.up: dict[str, bool] = {}
        self.logged: set[tuple[str, str]] = set()

    def fail(self, name: str, kind: str, detail: str = "") -> None:
        """Count a collector error; log only when the collector changes state."""
        self.ledger.add("collector_errors_total", (name, kind), 1)
        if self.up.get(name, True):
            log.warning("collector %s failing: %s %s", name, kind, detail)
        self.up[name] = False

    def degraded(self, name: str, kind: str, detail: str = "") -> None:
        """Count a failed field of a reading that was still used (the collector stays up);
        logged once per (collector, kind)."""
        self.ledger.add("collector_errors_total", (name, kind), 1)
        if (name, kind) not in self.logged:
            self.logged.add((name, kind))
            log.warning("collector %s degraded: %s %s", name, kind, detail)

    def ok(self, name: str) -> None:
        if not self.up.get(name, True):
            log.info("collector %s recovered", name)
        self.up[name] = True

    def contribute(self, snap: Any) -> None:
        for name, up in self.up.items():
            snap.set("collector_up", (name,), 1.0 if up else 0.0)
