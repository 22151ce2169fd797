"""Emissions budgets per request, as the gauge wattprint_endpoint_budget_grams_per_request{namespace,
endpoint, model, owner}: from the configuration (``engines.budgets``, the platform's defaults)
and from the pods themselves, so that the team that owns an endpoint owns its budget.

A pod annotated ``wattprint.io/budget-grams-per-request: "0.5"`` (and optionally
``wattprint.io/owner: team-search``) gives its endpoint (namespace, endpoint, as the pod cache
resolves them) that budget, for every model the endpoint's servers on this node report (their
latest good scrapes), else the pod's own model. The annotation is read from the pod cache, which
watches the node's pods: editing it (``kubectl annotate``, or the pod template, which rolls the
pods) changes the series within one pod-watch event, without restarting the exporter. Where an
endpoint has both, the annotation wins over the configuration; where its pods on a node disagree
(a rollout between two templates), the lowest budget wins, so a lowered budget applies at once.
An annotation that is not a plain decimal number of grams in (0, 1e6) ("1_000", non-ASCII digits,
"inf", over 64 characters: none is) is ignored, logged once per pod and
value, and counted in wattprint_budget_annotations_invalid. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

log = logging.getLogger(__name__)

BUDGET_ANNOTATION = "wattprint.io/budget-grams-per-request"
OWNER_ANNOTATION = "wattprint.io/owner"
MAX_GRAMS = 1e6
MAX_OWNER_BYTES = 128

Labels = tuple[str, str, str, str]  # namespace, endpoint, model, owner


# a plain decimal number, as a person writes it: not Python's float() grammar, which also takes
# "1_000" (1000), "٠٫٥"-style non-ASCII digits, "infinity"; at most 64 characters
_DECIMAL = re.compile(r"\+?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")


def parse_grams(text: Any) -> float | None:
    """Grams per request from an annotation value, or None when it is not one."""
    t = str(text).strip()
    if len(t) > 64 or not _DECIMAL.fullmatch(t):
        return None
    g = float(t)
    return g if math.isfinite(g) and 0 < g < MAX_GRAMS else None


def bounded(text: Any, max_bytes: int = MAX_OWNER_BYTES) -> str:
    """An annotation as a label value or log text: at most ``max_bytes`` of UTF-8 (never half a
    character), anything not encodable (a lone surrogate from a JSON escape) replaced."""
    raw = str(text).encode("utf-8", "replace")[:max_bytes]
    return raw.decode("utf-8", "ignore")


class Budgets:
    """Configured budgets plus the pods' own; :meth:`series` is called at every sample."""

    def __init__(self) -> None:
        self.configured: list[tuple[Labels, float]] = []
        self.invalid = 0
        self._warned: set[tuple[str, str]] = set()

    def series(self, pods: Iterable[Any], served: Mapping[tuple[str, str, str], frozenset[str]]
               ) -> dict[Labels, float]:
        """``pods``: the pod cache's PodMeta (namespace, endpoint, model, annotations, uid);
        ``served``: (namespace, endpoint, pod) → the models its server reports."""
        owned: dict[tuple[str, str], tuple[float, str]] = {}
        models: dict[tuple[str, str], set[str]] = {}
        invalid = 0
        for p in pods:
            raw = p.annotations.get(BUDGET_ANNOTATION)
            if raw is None:
                continue
            grams = parse_grams(raw)
            if grams is None:
                invalid += 1
                seen = (p.uid, hashlib.sha256(str(raw).encode("utf-8", "replace")).hexdigest()[:16])
                if seen not in self._warned and len(self._warned) < 10_000:  # not the value: ≤ 256 KiB each
                    self._warned.add(seen)
                    log.warning("pod %s/%s: annotation %s=%r is not a number of grams per request in "
                                "(0, %g); its endpoint keeps the configured budget, if any",
                                p.namespace, p.name, BUDGET_ANNOTATION, bounded(raw, 64), MAX_GRAMS)
                continue
            owner = bounded(p.annotations.get(OWNER_ANNOTATION, ""))
            key = (p.namespace, p.endpoint)
            if key not in owned or grams < owned[key][0]:
                owned[key] = (grams, owner)
            if p.model:
                models.setdefault(key, set()).add(p.model)
        self.invalid = invalid
        out: dict[Labels, float] = {(ns, ep, model, owner): g for (ns, ep, model, owner), g in self.configured
                                    if (ns, ep) not in owned}
        for (ns, ep), (grams, owner) in owned.items():
            reported = {m for (sns, sep, _pod), ms in served.items() if (sns, sep) == (ns, ep) for m in ms}
            for model in sorted(reported or models.get((ns, ep)) or {""}):
                out[(ns, ep, model, owner)] = grams
        return out
