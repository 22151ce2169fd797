"""CPU stage: per-process CPU time and the node's busy time from procfs, the CPU meter's joules
per zone (booked on the zone and node series) → one :class:`~exporter.attribution.CpuInterval`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import attribution
from .health import Health


@dataclass
class CpuTime:
    per_process: dict[int, float]     # CPU seconds per pid in the interval
    busy_s: float                     # node busy CPU seconds
    total_s: float
    known: bool = True                # False: /proc/stat could not be read this sample

    @property
    def busy_ratio(self) -> float:
        return min(1.0, self.busy_s / self.total_s) if self.total_s > 0 else 0.0


DEGRADED = {"gap_estimated"}  # error kinds of a reading that was still used whole


class CpuStage:
    def __init__(self, meter: Any, procs: Any, health: Health) -> None:
        self.meter = meter                # a CpuMeter (exporter.sensors.base)
        self.procs = procs                # a ProcessTable
        self.health = health
        self.busy_ratio = 0.0
        self.zones = meter.cpu_zones()

    @property
    def method(self) -> str:
        return self.meter.name

    def start(self) -> None:
        """Start the meter's own poller, where it has one (RAPL reads on its own schedule)."""
        if hasattr(self.meter, "start"):
            self.meter.start()

    def stop(self) -> None:
        if hasattr(self.meter, "stop"):
            self.meter.stop()

    def checkpoint(self) -> tuple:
        return self.procs.checkpoint(), self.meter.checkpoint(), self.busy_ratio

    def restore(self, cp: tuple) -> None:
        procs, meter, self.busy_ratio = cp
        self.procs.restore(procs)
        self.meter.restore(meter)

    def read_time(self) -> CpuTime:
        try:
            unreadable = getattr(self.procs, "environ_unreadable", 0)
            per_process = self.procs.scan()
            self.health.ok("procfs")
            for _ in range(getattr(self.procs, "environ_unreadable", 0) - unreadable):
                self.health.degraded("procfs", "environ_unreadable",
                                     "an inference server's /proc/<pid>/environ is not readable "
                                     "(another user's process: run as root or with CAP_SYS_PTRACE); "
                                     "its port and model come from its command line and defaults only")
        except OSError as e:
            self.health.fail("procfs", type(e).__name__.lower(), str(e))
            per_process = {}
        try:
            busy_s, total_s = self.procs.node_delta()
        except (OSError, ValueError) as e:
            self.health.fail("procfs", "stat_" + type(e).__name__.lower(), str(e))
            t = CpuTime(per_process, 0.0, 0.0, known=False)  # the next good read covers the gap
            return t
        t = CpuTime(per_process, busy_s, total_s)
        self.busy_ratio = t.busy_ratio
        return t

    def read_energy(self, dt: float, t: CpuTime, ledger: Any) -> attribution.CpuInterval | None:
        reading = self.meter.measure(dt, t.busy_ratio if t.known else None)
        name = self.meter.name
        failed = False
        for zone, kind in reading.errors.items():
            if kind in DEGRADED:
                self.health.degraded(name, kind, f"zone {zone}")
            else:
                self.health.fail(name, kind, f"zone {zone}")
                failed = True
        if not failed and name != "estimate":
            self.health.ok(name)
        zones = self.meter.cpu_zones()
        if zones is not self.zones:  # a rediscovery found zones (or lost them)
            self.zones = zones
        energy: dict[str, float] = {}
        for z in self.zones:
            labels = (z.socket, z.domain, z.method)
            ledger.ensure("cpu_energy_joules_total", labels)
            j = reading.joules.get(z.zone, 0.0)
            ledger.add("cpu_energy_joules_total", labels, j)
            est = reading.estimated.get(z.zone)
            if est:  # never booked as measured, never dropped: a counter of its own
                ledger.add("cpu_energy_estimated_joules_total", labels, est)
            if z.used_in_total:
                energy[z.component] = energy.get(z.component, 0.0) + j
        for component, j in energy.items():
            ledger.ensure("node_energy_joules_total", (component,))
            ledger.add("node_energy_joules_total", (component,), j)
        if dt <= 0:
            return None
        return attribution.CpuInterval(energy_j=energy, busy_ratio=t.busy_ratio,
                                       cpu_seconds={pid: s for pid, s in t.per_process.items() if s > 0},
                                       node_busy_seconds=t.busy_s)

    def contribute(self, snap: Any) -> None:
        for z in self.zones:
            snap.set("cpu_zone_info", (z.zone, z.socket, z.domain, z.method, str(z.used_in_total).lower(),
                                       str(z.readable).lower()), 1)
        snap.set("cpu_busy_ratio", (), self.busy_ratio)
        snap.set("processes_tracked", (), float(len(self.procs.procs)))
