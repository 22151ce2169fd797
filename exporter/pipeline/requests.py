"""Requests stage: the engine scraper's request/token increments into the ledger, inside the
sample (a rolled-back sample leaves them for the next), and the model weights of each server's
energy for the booking stage.

The model on a server's energy is the model its engine reports, so that energy and requests
meet on one label set (grams per request is one PromQL division):

- A server whose latest good scrape shows **one model** books all its energy, idle included, to
  that model: ``vllm serve --port 8000 Qwen/Qwen3-8B`` (no model readable from argv), a model
  given only in ``--config``, vLLM's default model, Triton serving one model. Until the first
  good scrape (or with metrics off) the energy stays on the identity's model from argv.
- A **multi-model server** (Triton: two or more models seen) is split by the activity of its
  latest scrape window: the models' compute time, else their requests. A model with no activity
  in that window gets none of the energy. When no increment has arrived for ``expire_s`` (two
  engine scrape intervals and a second), no model was active: the weights are dropped and the
  server's energy stays on its own label set (its identity's model) until a model is active
  again.
Which processes a server's weights apply to: every process on its endpoint (namespace, endpoint,
pod) whose own model is not one the server reports: the server process itself, its renamed GPU
workers, a sibling in its pod (Ray workers), a Triton stub of a TensorRT-LLM step
(``postprocessing``, which is no model of its own). A process whose model the server reports (a
Triton stub of ``vllm_model``, a llama.cpp router's per-model child) keeps its model."""

from __future__ import annotations

from typing import Any, Callable

from ..identity.resolver import Workload
from .budgets import Budgets

Key = tuple[str, str, str]  # (namespace, endpoint, pod): one server's processes


def key_of(w: Workload) -> Key:
    return (w.namespace, w.endpoint, w.pod)


class RequestStage:
    def __init__(self, expire_s: float = 11.0) -> None:
        self.source: Any = None           # the EngineScraper (drain() → increments), when scraping is on
        self.expire_s = expire_s
        self.model_weights: dict[Key, dict[str, float]] = {}
        self.served: dict[Key, frozenset[str]] = {}  # the models each server reported last
        self.multi_model: set[Key] = set()      # servers seen serving two or more models
        self._active: dict[Key, dict[str, float]] = {}   # multi-model: latest window's split
        self._weights_at: dict[Key, float] = {}
        self.budgets = Budgets()           # configured (daemon.apply_engine_lists) and the pods' own
        self.pods: Callable[[], list[Any]] | None = None  # the pod cache's live pods, in a cluster
        self._carry: list[Any] = []     # increments a failed sample drained: the next one books them
        self._drained: list[Any] = []

    def weights_for(self, w: Workload) -> dict[str, float] | None:
        """The model split of ``w``'s energy, or None to keep its own model (see the module)."""
        k = (w.namespace, w.endpoint, w.pod)
        weights = self.model_weights.get(k)
        if weights is None or w.model in self.served.get(k, ()) and len(weights) > 1:
            return None
        return weights

    def checkpoint(self) -> tuple:
        """Taken at the start of every sample: nothing is drained by this sample yet."""
        self._drained = []
        return (list(self._carry), dict(self.model_weights), dict(self._active), dict(self._weights_at),
                dict(self.served))

    def restore(self, cp: tuple) -> None:
        """The sample failed: its ledger increments were dropped, so give back what it drained."""
        carry, self.model_weights, self._active, self._weights_at, self.served = cp
        self._carry = carry + self._drained
        self._drained = []

    def apply(self, ledger: Any, now: float = 0.0) -> None:
        if self.source is None:
            return
        compute: dict[Key, dict[str, float]] = {}
        requests: dict[Key, dict[str, float]] = {}
        served: dict[Key, frozenset[str]] = {}
        for w, models in self.source.served_models().items():  # the models of the latest good scrapes
            served[key_of(w)] = served.get(key_of(w), frozenset()) | models
        self.multi_model.update(k for k, models in served.items() if len(models) >= 2)
        self._drained = self._carry + self.source.drain()
        self._carry = []
        for inc in self._drained:
            w, c = inc.workload, inc.counts
            if not any(c.values()):
                continue  # a reading where nothing moved (kept for the marginal-cost windows)
            labels = (w.namespace, w.endpoint, inc.model)
            ledger.add("endpoint_requests_total", labels, c.get("requests", 0.0))
            ledger.add("endpoint_tokens_total", labels + ("prompt",), c.get("prompt_tokens", 0.0))
            ledger.add("endpoint_tokens_total", labels + ("generation",), c.get("generation_tokens", 0.0))
            k = key_of(w)
            compute.setdefault(k, {})[inc.model] = c.get("compute_seconds", 0.0)
            requests.setdefault(k, {})[inc.model] = c.get("requests", 0.0)
        for k in compute:
            if len(compute[k]) >= 2:
                self.multi_model.add(k)
            if k not in self.multi_model:
                continue  # one model: nothing to split
            basis = compute[k] if sum(compute[k].values()) > 0 else requests[k]
            total = sum(basis.values())
            if total > 0:  # this window's activity only: an idle model gets nothing
                self._active[k] = {m: v / total for m, v in basis.items() if v > 0}
                self._weights_at[k] = now
        for k in [k for k, at in self._weights_at.items() if now - at > self.expire_s]:
            del self._weights_at[k]
            self._active.pop(k, None)
        self.multi_model &= served.keys() | self._active.keys()   # bounded by the live servers
        self.served = served
        self.model_weights = {k: {next(iter(models)): 1.0} for k, models in served.items()
                              if len(models) == 1 and k not in self.multi_model}
        self.model_weights.update(self._active)

    def drained(self) -> list[Any]:
        """The increments this sample booked (for the marginal-cost stage, after the commit)."""
        return self._drained

    def contribute(self, snap: Any) -> None:
        for labels, grams in self.budgets.series(self.pods() if self.pods else (), self.served).items():
            snap.set("endpoint_budget_grams_per_request", labels, grams)
        if self.pods is not None:
            snap.set("budget_annotations_invalid", (), float(self.budgets.invalid))
        if self.source is not None:
            self.source.contribute(snap)
