#!/usr/bin/env python3
"""How exact is Wattprint's CO2e counter over a day of varying load and grid intensity, and how
wrong are the PromQL shortcuts people reach for instead?

A simulated node (one GPU whose load follows a diurnal curve, CPU estimate) runs a full day on a
fake monotonic clock, sampled every --interval seconds by the real Sampler, while the grid
intensity follows a UK-like half-hourly curve (low at night and midday, evening peak). Truth is
∫ P(t)·I(t) dt at 1 s resolution. Prints a table; tests/test_carbon_day.py asserts on it.

    .venv/bin/python benchmarks/carbon_integration.py [--interval 60]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

DAY = 86400
IDLE_W, MAX_W = 70.0, 700.0


def intensity_at(t: float) -> float:
    """gCO2e/kWh for the half-hour containing t: night trough, solar dip, evening peak."""
    h = (math.floor(t / 1800) * 1800 % DAY) / 3600
    return (190 + 70 * math.exp(-((h - 18.5) / 2.5) ** 2) - 60 * math.exp(-((h - 13) / 2.5) ** 2)
            - 40 * math.exp(-((h - 3.5) / 2.0) ** 2))


def util_at_hour(h: int) -> float:
    """SM % for hour h: traffic peaks in the evening, like user-facing inference."""
    return round(15 + 70 * math.exp(-((h - 19) / 4.0) ** 2), 1)


@dataclass
class CurveIntensity:
    """Stands in for the live provider service: the intensity of the moment, from a curve."""
    clock: object
    t0: float

    def current(self, signal: str = "average"):
        from exporter.carbon.intensity import Current

        return Current(intensity_at(self.clock() - self.t0), "curve", "GB", signal, 0.0, "UK-like curve")

    def readings(self):
        return []

    def stats(self):
        return {}


def run(interval: float = 60.0) -> dict:
    from exporter.carbon import accounting
    from exporter.identity.resolver import Resolver
    from exporter.sampler import Sampler
    from exporter.sensors.cpu_estimate import CpuPowerModel, EstimateMeter
    from exporter.sensors.nvml import GpuMeter
    from exporter.sensors.procfs import ProcessTable
    from exporter.sensors.simnvml import SimulatedNVML
    from support import make_procfs, parse_metrics, value, write_scenario

    class Clock:
        t = 1000.0

        def __call__(self) -> float:
            return self.t

    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        phases = [{"at_s": h * 3600, "processes": [{"pid": 10, "sm_util": util_at_hour(h)}]} for h in range(24)]
        sim = SimulatedNVML.from_file(str(write_scenario(tmp / "sim.yaml", {"gpus": [
            {"name": "NVIDIA H100 80GB HBM3", "idle_w": IDLE_W, "max_w": MAX_W, "phases": phases}]})), clock)
        gpu = GpuMeter(sim, backend="simulated")
        gpu.open()
        busy = idle = 1000
        make_procfs(tmp / "proc", {10: {"comm": "python3", "cmdline": ["vllm", "serve", "m"]}}, busy, idle)
        carbon = accounting.Carbon(accounting.Region("curve", 190, "curve", "test"), 1.0, "pue.none",
                                   CurveIntensity(clock, 1000.0))  # type: ignore[arg-type]
        sampler = Sampler(gpu=gpu, cpu=EstimateMeter(CpuPowerModel(4, 1.0, 5.0)),
                          procs=ProcessTable(str(tmp / "proc")), resolver=Resolver(), interval_s=interval,
                          clock=clock, carbon=carbon)
        energy_series = []   # (t, cumulative node J) as Prometheus would scrape it every interval
        steps = int(DAY / interval)
        sampler.sample()
        for _ in range(steps):
            clock.t += interval
            busy, idle = busy + int(interval * 100 * 0.25), idle + int(interval * 100 * 0.75)
            make_procfs(tmp / "proc", {10: {"comm": "python3", "cmdline": ["vllm", "serve", "m"]}}, busy, idle)
            sampler.sample()
            energy_series.append((clock.t - 1000.0, sampler.ledger.total("node_energy_joules_total")))
        m = parse_metrics(sampler.metrics_text())
    cpu_w = 4 * (1.0 + 0.25 * 4.0)
    truth_g = 0.0
    for s in range(DAY):
        p = IDLE_W + (MAX_W - IDLE_W) * min(1.0, util_at_hour(int(s // 3600)) / 100) + cpu_w
        truth_g += p * intensity_at(s + 0.5) / 3.6e6
    daemon_g = value(m, "wattprint_node_co2e_grams_total", scope="operational")
    energy_j = energy_series[-1][1]
    # PromQL shortcuts computed on the scraped series (one point per interval)
    naive = energy_j * intensity_at(DAY - 1) / 3.6e6                      # increase(E[1d]) * I(now)
    mean_i = sum(intensity_at(k * 1800) for k in range(48)) / 48
    daily_avg = energy_j * mean_i / 3.6e6                                   # increase(E[1d]) * avg_over_time(I[1d])
    window = max(1, int(300 / interval))                                    # rate(E[5m]) * I, summed over 1m steps
    stepped = 0.0
    for i in range(window, len(energy_series)):
        (t1, e1), (t0, e0) = energy_series[i], energy_series[i - window]
        stepped += (e1 - e0) / (t1 - t0) * intensity_at(t1) * interval / 3.6e6
    return {"interval_s": interval, "truth_g": truth_g, "daemon_g": daemon_g, "energy_kwh": energy_j / 3.6e6,
            "daemon_err_pct": 100 * (daemon_g - truth_g) / truth_g,
            "naive_err_pct": 100 * (naive - truth_g) / truth_g,
            "daily_avg_err_pct": 100 * (daily_avg - truth_g) / truth_g,
            "rate5m_err_pct": 100 * (stepped - truth_g) / truth_g}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--interval", type=float, default=60.0, help="sample interval in seconds (default 60)")
    r = run(ap.parse_args().interval)
    print(f"One simulated day: {r['energy_kwh']:.2f} kWh, true emissions {r['truth_g']:.1f} gCO2e "
          f"(sampled every {r['interval_s']:g} s)")
    print(f"{'method':<62}{'gCO2e':>10}{'error':>9}")
    rows = [("Wattprint: ΔE × I(sample), integrated in the daemon", r["daemon_err_pct"]),
            ("PromQL: increase(energy[1d]) × intensity now", r["naive_err_pct"]),
            ("PromQL: increase(energy[1d]) × avg_over_time(intensity[1d])", r["daily_avg_err_pct"]),
            ("PromQL: Σ rate(energy[5m]) × intensity, 1 m steps", r["rate5m_err_pct"])]
    for name, err in rows:
        print(f"{name:<62}{r['truth_g'] * (1 + err / 100):>10.1f}{err:>+8.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
