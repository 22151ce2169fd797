"""Requests stage: the engine scraper's request/token increments into the ledger, inside the
sample (a rolled-back sample leaves them for the next), and each multi-model server's split
weights for the booking stage."""

from __future__ import annotations

from typing import Any

from ..identity.resolver import Workload


class RequestStage:
    def __init__(self) -> None:
        self.source: Any = None           # the EngineScraper (drain() → increments), when scraping is on
        self.model_weights: dict[Workload, dict[str, float]] = {}
        self.budgets: list[tuple[tuple[str, str, str], float]] = []

    def apply(self, ledger: Any) -> None:
        if self.source is None:
            return
        compute: dict[Workload, dict[str, float]] = {}
        requests: dict[Workload, dict[str, float]] = {}
        for inc in self.source.drain():
            w, c = inc.workload, inc.counts
            labels = (w.namespace, w.endpoint, inc.model)
            ledger.add("endpoint_requests_total", labels, c.get("requests", 0.0))
            ledger.add("endpoint_tokens_total", labels + ("prompt",), c.get("prompt_tokens", 0.0))
            ledger.add("endpoint_tokens_total", labels + ("generation",), c.get("generation_tokens", 0.0))
            compute.setdefault(w, {})[inc.model] = c.get("compute_seconds", 0.0)
            requests.setdefault(w, {})[inc.model] = c.get("requests", 0.0)
        for w in compute:
            if len(compute[w]) < 2:
                continue  # one model: nothing to split
            basis = compute[w] if sum(compute[w].values()) > 0 else requests[w]
            total = sum(basis.values())
            if total > 0:
                self.model_weights[w] = {m: v / total for m, v in basis.items()}

    def contribute(self, snap: Any) -> None:
        for labels, grams in self.budgets:
            snap.set("endpoint_budget_grams_per_request", labels, grams)
        if self.source is not None:
            self.source.contribute(snap)
