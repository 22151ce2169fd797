"""One GPU's accounting state: counter deltas, counter resets, power integration and the learned
idle baseline. Pure (no I/O, no clock of its own): fed one reading and its time per sample, the
same for every GPU backend. A snapshot (``copy()``) restores it after a failed sample."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Delta:
    joules: float | None      # None: nothing to book (first read, or no power)
    dt_s: float
    counter_reset: bool = False


@dataclass
class GpuAccount:
    last_mj: int | None = None
    last_power_w: float | None = None
    last_t: float | None = None
    min_power_w: float | None = None      # lowest power seen (learned baseline)
    min_idle_power_w: float | None = None  # lowest power seen with no SM activity
    power_w: float = 0.0

    def copy(self) -> "GpuAccount":
        return GpuAccount(self.last_mj, self.last_power_w, self.last_t, self.min_power_w, self.min_idle_power_w,
                          self.power_w)

    def update(self, energy_mj: int | None, power_mw: int | None, now: float) -> Delta:
        """Joules since this GPU's last good read (gaps included: nothing is lost). The energy
        counter where there is one; a counter that went backwards (driver reload) and power-only
        devices integrate power (trapezoid) over the interval."""
        power_w = self.power_w if power_mw is None else power_mw / 1000.0  # unread power: the last one
        dt = 0.0 if self.last_t is None else now - self.last_t
        joules: float | None = None
        reset = False
        if energy_mj is not None:
            if self.last_mj is not None:
                if energy_mj >= self.last_mj:
                    joules = (energy_mj - self.last_mj) / 1000.0
                else:  # a driver reload restarted the counter: what it counted since is exact
                    reset = True
                    bridged = (power_w + (self.last_power_w or power_w)) / 2 * dt
                    joules = max(bridged, energy_mj / 1000.0)
            self.last_mj = energy_mj
        elif self.last_t is not None:  # no counter (or it was given up on): integrate power
            prev = self.last_power_w if self.last_power_w is not None else power_w
            joules = (power_w + prev) / 2 * dt
            self.last_mj = None
        self.last_t, self.last_power_w, self.power_w = now, power_w, power_w
        return Delta(joules, dt, reset)

    def learn_idle(self, quiet: bool) -> None:
        """Track the lowest power seen, and the lowest seen while the GPU was quiet."""
        p = self.power_w
        self.min_power_w = p if self.min_power_w is None else min(self.min_power_w, p)
        if quiet:
            self.min_idle_power_w = p if self.min_idle_power_w is None else min(self.min_idle_power_w, p)

    def idle_baseline(self, configured: float | None, table: float | None) -> tuple[float, str]:
        """(watts, source): configured, else learned while quiet, else the model table (capped by
        the lowest power seen), else the lowest power seen."""
        if configured is not None:
            return configured, "configured"
        if self.min_idle_power_w is not None:
            return self.min_idle_power_w, "learned"
        if table is not None:
            return min(table, self.min_power_w if self.min_power_w is not None else table), "table"
        return (self.min_power_w or 0.0), "learned"


def quiet(processes: dict[int, int], sm_util: dict[int, float]) -> bool:
    """Quiet = no compute process at all, or samples that all say 0 % SM. "No new sample" is not
    quiet: a read soon after the previous one can find none while the GPU is busy."""
    return not processes or (bool(sm_util) and not any(v > 0 for v in sm_util.values()))
