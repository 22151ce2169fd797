"""CPU power estimate for hosts without readable RAPL (VMs, most cloud instances).

Model (Cloud Carbon Footprint's compute model): ``P = vCPUs × (min_W + u × (max_W − min_W))``
where ``u`` is the node CPU busy fraction over the interval from ``/proc/stat``. Defaults are the
CCF AWS fallback averages, 0.74 W and 3.5 W per vCPU (ccf-coefficients, Apache-2.0); override
with ``--cpu.estimate-min-watts-per-vcpu`` / ``--cpu.estimate-max-watts-per-vcpu``. Series from it
carry ``method="estimate"`` so nobody mistakes them for a measurement.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .base import CpuReading, CpuZone, MeterSpec, Probe

if TYPE_CHECKING:
    from ..config import Config

SOURCE = "Cloud Carbon Footprint AWS fallback average per vCPU (ccf-coefficients, Apache-2.0)"


@dataclass(frozen=True)
class CpuPowerModel:
    vcpus: int
    min_w: float
    max_w: float

    def power_w(self, busy_ratio: float) -> float:
        u = min(1.0, max(0.0, busy_ratio))
        return self.vcpus * (self.min_w + u * (self.max_w - self.min_w))

    def energy_j(self, busy_ratio: float, dt_s: float) -> float:
        return self.power_w(busy_ratio) * dt_s

    def describe(self) -> str:
        return (f"{self.vcpus} vCPU × ({self.min_w:g} W + busy × ({self.max_w:g} − {self.min_w:g}) W) "
                f"= {self.power_w(0):.1f} W idle … {self.power_w(1):.1f} W busy; source: {SOURCE}")


def count_vcpus(procfs: str) -> int:
    """Online CPUs from ``<procfs>/stat`` (``cpuN`` lines), falling back to os.cpu_count()."""
    try:
        with open(os.path.join(procfs, "stat")) as fh:
            n = sum(1 for line in fh if line.startswith("cpu") and line[3:4].isdigit())
        if n:
            return n
    except OSError:
        pass
    return os.cpu_count() or 1


ZONE = CpuZone("estimate", "all", "package", "estimate", True, True, "cpu")


class EstimateMeter:
    """The CPU meter of last resort: the model above over the node's busy fraction. An interval
    whose busy share is unknown (``/proc/stat`` unreadable) is not estimated at idle power: its
    time is carried, and the next good read — whose busy time covers the whole gap, since the
    node's CPU counters are cumulative — prices the gap and its own interval together."""

    name = "estimate"

    def __init__(self, model: CpuPowerModel) -> None:
        self.model = model
        self.pending_s = 0.0   # seconds whose busy share is not known yet

    def cpu_zones(self) -> list[CpuZone]:
        return [ZONE]

    def measure(self, dt_s: float, busy_ratio: float | None) -> CpuReading:
        if dt_s <= 0:
            return CpuReading({ZONE.zone: 0.0})
        if busy_ratio is None:
            self.pending_s += dt_s
            return CpuReading({ZONE.zone: 0.0})
        span, self.pending_s = dt_s + self.pending_s, 0.0
        return CpuReading({ZONE.zone: self.model.energy_j(busy_ratio, span)})

    def checkpoint(self) -> Any:
        return self.pending_s

    def restore(self, checkpoint: Any) -> None:
        self.pending_s = checkpoint


def model_from(cfg: "Config") -> CpuPowerModel:
    return CpuPowerModel(cfg.cpu.estimate_vcpus or count_vcpus(cfg.path.procfs),
                         cfg.cpu.estimate_min_watts_per_vcpu, cfg.cpu.estimate_max_watts_per_vcpu)


def probe(cfg: "Config") -> Probe:
    model = model_from(cfg)
    return Probe("estimate", "cpu", True, f"CPU estimate: {model.describe()}",
                 info={"vcpus": model.vcpus, "min_watts_per_vcpu": model.min_w,
                       "max_watts_per_vcpu": model.max_w, "model": model.describe(), "source": SOURCE})


METER = MeterSpec("estimate", "cpu", "CPU power estimated from utilisation (Cloud Carbon Footprint's model)",
                  auto=True, open=lambda cfg: EstimateMeter(model_from(cfg)), probe=probe)
