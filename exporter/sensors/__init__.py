"""The meters, opened from the configuration. One module per meter; this is their table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .cpu_estimate import CpuPowerModel, count_vcpus
from .nvml import GpuMeter
from .rapl import RaplMeter

if TYPE_CHECKING:
    from ..config import Config


class MeterError(Exception):
    """A meter the configuration requires cannot be opened."""


def open_gpu(cfg: "Config") -> GpuMeter | None:
    backend = cfg.gpu.backend
    if backend == "none":
        return None
    if backend == "simulated":
        from .simnvml import ScenarioError, SimulatedNVML

        if not cfg.gpu.simulation_file:
            raise MeterError("gpu.backend=simulated needs --gpu.simulation-file (a scenario YAML)")
        try:
            meter = GpuMeter(SimulatedNVML.from_file(cfg.gpu.simulation_file), backend="simulated")
        except ScenarioError as e:
            raise MeterError(f"--gpu.simulation-file {cfg.gpu.simulation_file!r}: {e}") from None
    else:
        meter = GpuMeter()
    status = meter.open()
    if backend in ("nvml", "simulated") and status.state != "ok":
        raise MeterError(f"gpu.backend={backend}: NVML unavailable: {status.detail}")
    return meter


def open_rapl(cfg: "Config") -> RaplMeter | None:
    return None if cfg.cpu.rapl == "off" else RaplMeter(cfg.path.sysfs)


def cpu_model(cfg: "Config") -> CpuPowerModel:
    return CpuPowerModel(cfg.cpu.estimate_vcpus or count_vcpus(cfg.path.procfs),
                         cfg.cpu.estimate_min_watts_per_vcpu, cfg.cpu.estimate_max_watts_per_vcpu)
