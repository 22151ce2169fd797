"""From attributed joules to grams CO2e, sample by sample.

Operational: ``ΔCO2e = ΔE × PUE × intensity(now) / 3.6e6`` for every attributed share, with the
*average* intensity in use at that sample (live provider, else the bundled region value). Node
totals use the same factor, so Σ endpoints = node. Counterfactual: the same energy priced at the
bundled intensity of each candidate region (same PUE: the question is the grid). Embodied: each
GPU-second of the interval carries ``embodied_grams(1 s)``, charged to the workloads holding
that GPU in proportion to their idle (residency) share, else their energy share, else to
``unallocated``. Nothing here does I/O.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field

from . import factors, regions
from .intensity import Current, IntensityService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Region:
    key: str            # dataset key ("aws:us-east-1") or "unknown"
    grams_per_kwh: float
    source: str         # where the static value comes from, with its year
    how: str            # how the region was chosen: "config", "kubernetes label", "AWS IMDSv2", …


@dataclass
class Carbon:
    region: Region
    pue: float
    pue_source: str
    service: IntensityService
    counterfactual: dict[str, float] = field(default_factory=dict)   # region key -> g/kWh
    embodied_g_per_gpu_s: float = 0.0
    training_g: dict[str, float] = field(default_factory=dict)       # model -> grams

    def current(self) -> Current:
        cur = self.service.current("average")
        assert cur is not None  # "average" always answers (static as the last resort)
        return cur

    def grams_per_joule(self, cur: Current) -> float:
        return self.pue * cur.grams_per_kwh / factors.JOULES_PER_KWH


def operational(joules_by_key: Mapping[Hashable, float], grams_per_joule: float) -> dict[Hashable, float]:
    return {k: j * grams_per_joule for k, j in joules_by_key.items() if j > 0}


def counterfactual(joules_by_key: Mapping[Hashable, float], pue: float,
                   candidates: Mapping[str, float]) -> dict[tuple[Hashable, str], float]:
    out = {}
    for region, g_per_kwh in candidates.items():
        k = pue * g_per_kwh / factors.JOULES_PER_KWH
        for key, j in joules_by_key.items():
            if j > 0:
                out[(key, region)] = j * k
    return out


def embodied(device_weights: Mapping[str, Mapping[Hashable, float]], device_dt: Mapping[str, float],
             grams_per_gpu_second: float, unallocated: Hashable) -> dict[Hashable, float]:
    """Each GPU's embodied grams for its interval, split by the given per-key weights."""
    out: dict[Hashable, float] = {}
    for device, dt in device_dt.items():
        grams = dt * grams_per_gpu_second
        if grams <= 0:
            continue
        weights = {k: w for k, w in device_weights.get(device, {}).items() if w > 0}
        total = math.fsum(weights.values())
        if total <= 0:
            out[unallocated] = out.get(unallocated, 0.0) + grams
            continue
        for k, w in weights.items():
            out[k] = out.get(k, 0.0) + grams * w / total
    return out


def resolve_static(region: str | None, how: str) -> Region:
    """The bundled value for a region, or the world average when none is known."""
    if region:
        r = regions.lookup(region)
        year = f", {r.year}" if r.year else ""
        return Region(r.key, r.grams_per_kwh, f"{r.source}{year}", how)
    world = factors.FACTORS["intensity.world_average"]
    return Region("unknown", world.value, f"world average: {world.source}", "none (set carbon.region)")


def default_pue(region_key: str) -> tuple[float, str]:
    provider = region_key.split(":", 1)[0] if ":" in region_key else ""
    f = factors.FACTORS.get(f"pue.{provider}") or factors.FACTORS["pue.none"]
    return f.value, f.name


def build(*, region: Region, pue: float | None, providers: Sequence, max_age_s: float,
          counterfactual_regions: Sequence[str], embodied_cfg: Mapping[str, float],
          training_tonnes: Mapping[str, float], clock: Callable[[], float] | None = None) -> Carbon:
    if pue is None:
        pue, pue_source = default_pue(region.key)
    else:
        pue_source = "configured"
    kw = {"clock": clock} if clock else {}
    service = IntensityService(list(providers), region.grams_per_kwh, region.source, max_age_s=max_age_s,
                               static_zone=region.key, **kw)
    cf = {}
    for name in counterfactual_regions:
        r = regions.lookup(name)
        cf[r.key] = r.grams_per_kwh
    per_gpu_s = factors.embodied_grams(1.0, **embodied_cfg)
    return Carbon(region, pue, pue_source, service, cf, per_gpu_s,
                  {m: t * 1e6 for m, t in training_tonnes.items()})
