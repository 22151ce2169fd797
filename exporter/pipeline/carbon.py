"""Carbon stage: ΔCO2e = ΔE × PUE × intensity(now), per workload and for the node; embodied per
GPU-second of residency; counterfactual regions. The intensity is read from memory (no I/O)."""

from __future__ import annotations

import time
from typing import Any

from ..carbon import accounting
from ..identity.resolver import UNALLOCATED
from .booking import Booked


class CarbonStage:
    def __init__(self, carbon: Any) -> None:
        self.carbon = carbon              # exporter.carbon.accounting.Carbon

    def book(self, b: Booked, ledger: Any) -> None:
        c = self.carbon
        k = c.grams_per_joule(c.current())
        op = accounting.operational(b.by_workload, k)
        for w, g in op.items():
            ledger.add("endpoint_co2e_grams_total", (w.namespace, w.endpoint, w.model, "operational"), g)
        ledger.add("node_co2e_grams_total", ("operational",), sum(op.values()))
        holders = {dev: b.residency.get((dev, "idle")) or b.residency.get((dev, "any"), {}) for dev in b.gpu_dt}
        emb = accounting.embodied(holders, b.gpu_dt, c.embodied_g_per_gpu_s, UNALLOCATED)
        for w, g in emb.items():
            ledger.add("endpoint_co2e_grams_total", (w.namespace, w.endpoint, w.model, "embodied"), g)
        ledger.add("node_co2e_grams_total", ("embodied",), sum(emb.values()))
        for (w, region), g in accounting.counterfactual(b.by_workload, c.pue, c.counterfactual).items():
            ledger.add("counterfactual_co2e_grams_total", (w.namespace, w.endpoint, w.model, region), g)

    def contribute(self, snap: Any) -> None:
        c = self.carbon
        cur = c.current()
        region = c.region.key
        snap.set("carbon_info", (region, cur.provider, cur.zone, cur.source, c.region.how), 1)
        snap.set("grid_intensity_grams_per_kwh", (region, c.region.key, "static", "average"), c.region.grams_per_kwh)
        snap.set("grid_intensity_age_seconds", ("static", c.region.key, "average"), 0.0)
        now = time.time()
        for r in c.service.readings():
            snap.set("grid_intensity_grams_per_kwh", (region, r.zone, r.provider, r.signal), r.grams_per_kwh)
            snap.set("grid_intensity_age_seconds", (r.provider, r.zone, r.signal), max(0.0, now - r.observed_at))
        for name, st in c.service.stats().items():
            snap.set("collector_up", (f"intensity_{name}",), 1.0 if st["up"] else 0.0)
            snap.set("intensity_provider_calls_total", (name,), float(st["calls"]))
            for kind, n in st["errors"].items():
                snap.set("collector_errors_total", (f"intensity_{name}", kind), float(n))
        snap.set("pue_ratio", (c.pue_source,), c.pue)
        snap.set("embodied_grams_per_gpu_second", (), c.embodied_g_per_gpu_s)
        for model, g in c.training_g.items():
            snap.set("model_training_co2e_grams", (model,), g)
