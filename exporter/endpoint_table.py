"""The per-endpoint table that the landing page (``/``) and ``wattprint demo``'s terminal view
show: power, energy, g CO2e, requests, g per request, idle share and the cleanest candidate
region's saving, per (namespace, endpoint, model). Pure: it reads series in the snapshot's shape
(catalogue short name → {label tuple in the catalogue's order: value}) and does no I/O.

Power is the growth of the endpoint's energy between two views divided by the time between them
(the landing page: the sampler's last two samples; the demo: its last two scrapes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

Series = Mapping[tuple[str, ...], float]
View = Mapping[str, Series]

# the families the table reads (a view need hold only these)
FAMILIES = ("endpoint_energy_joules_total", "endpoint_co2e_grams_total", "endpoint_requests_total",
            "counterfactual_co2e_grams_total")
CATCH_ALL = frozenset({"unallocated", "system", "overflow"})  # endpoints of no server (README)


@dataclass(frozen=True)
class Row:
    namespace: str
    endpoint: str
    model: str
    power_w: float | None      # None: no earlier view to compare with
    energy_j: float
    idle_j: float
    co2e_g: float | None       # operational + embodied; None: no carbon accounting
    operational_g: float       # the operational part
    requests: float | None     # None: no engine counts this endpoint's requests
    best_region: str | None    # the candidate region that would have emitted least
    best_region_g: float | None

    @property
    def key(self) -> tuple[str, str, str]:
        return self.namespace, self.endpoint, self.model

    @property
    def g_per_request(self) -> float | None:
        if self.co2e_g is None or not self.requests:
            return None
        return self.co2e_g / self.requests

    @property
    def idle_share(self) -> float | None:
        return self.idle_j / self.energy_j if self.energy_j > 0 else None

    @property
    def saving_g(self) -> float | None:
        """Operational grams the cleanest candidate region would have saved (the counterfactual
        prices operational emissions only: embodied ones do not move with the grid)."""
        return None if self.best_region_g is None else self.operational_g - self.best_region_g


def _sum_by(series: Series, width: int = 3) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = {}
    for labels, v in series.items():
        out[labels[:width]] = out.get(labels[:width], 0.0) + v
    return out


def rows(current: View, previous: View | None = None, dt_s: float = 0.0) -> list[Row]:
    """One row per endpoint with energy, largest energy first (catch-all endpoints last)."""
    energy = current.get("endpoint_energy_joules_total", {})
    total = _sum_by(energy)
    idle = _sum_by({k: v for k, v in energy.items() if len(k) > 4 and k[4] == "idle"})
    before = _sum_by(previous.get("endpoint_energy_joules_total", {})) if previous is not None else None
    co2e_series = current.get("endpoint_co2e_grams_total")
    co2e = _sum_by(co2e_series) if co2e_series is not None else None
    operational = _sum_by({k: v for k, v in (co2e_series or {}).items() if len(k) > 3 and k[3] == "operational"})
    requests = _sum_by(current.get("endpoint_requests_total", {}))
    regions: dict[tuple[str, ...], tuple[float, str]] = {}
    for labels, g in current.get("counterfactual_co2e_grams_total", {}).items():
        k, region = labels[:3], labels[3] if len(labels) > 3 else ""
        if k not in regions or (g, region) < regions[k]:
            regions[k] = (g, region)
    out = []
    for k, joules in total.items():
        power = None
        if before is not None and dt_s > 0:
            power = max(0.0, joules - before.get(k, 0.0)) / dt_s
        best = regions.get(k)
        row = Row(*k, power_w=power, energy_j=joules, idle_j=idle.get(k, 0.0),
                  co2e_g=None if co2e is None else co2e.get(k, 0.0), operational_g=operational.get(k, 0.0),
                  requests=requests.get(k), best_region=best[1] if best else None,
                  best_region_g=best[0] if best else None)
        out.append(row)
    out.sort(key=lambda r: (r.endpoint in CATCH_ALL, -r.energy_j, r.key))
    return out


def view_of(values: Mapping[str, Series]) -> dict[str, dict[tuple[str, ...], float]]:
    """A copy of the table's families from a snapshot's values (its owners may change theirs)."""
    return {name: dict(values[name]) for name in FAMILIES if name in values}


# --- formatting, shared by the landing page and the terminal view ---------------------------------

def fmt_energy(j: float) -> str:
    if j >= 3.6e6:
        return f"{j / 3.6e6:.2f} kWh"
    if j >= 3600:
        return f"{j / 3600:.2f} Wh"
    return f"{j:.0f} J"


def fmt_grams(g: float | None) -> str:
    if g is None:
        return "-"
    if abs(g) >= 1000:
        return f"{g / 1000:.2f} kg"
    if abs(g) >= 1:
        return f"{g:.2f} g"
    return f"{g * 1000:.2f} mg"


def cells(row: Row) -> tuple[str, ...]:
    """The row as text, in the order of HEADERS."""
    saving = row.saving_g
    if saving is None:
        saves = "-"
    elif row.operational_g <= 0:
        saves = fmt_grams(saving)
    else:
        saves = f"{fmt_grams(saving)} ({saving / row.operational_g:.0%})"
    return (row.endpoint, row.model or "-", "-" if row.power_w is None else f"{row.power_w:.0f} W",
            fmt_energy(row.energy_j), fmt_grams(row.co2e_g),
            "-" if row.requests is None else f"{row.requests:.0f}", fmt_grams(row.g_per_request),
            "-" if row.idle_share is None else f"{row.idle_share:.0%}", row.best_region or "-", saves)


HEADERS = ("endpoint", "model", "power", "energy", "CO2e", "requests", "CO2e/request", "idle share",
           "cleanest region", "it would save")
