"""The meter registry, like node_exporter's collectors: one line per meter, in ``auto`` order.

A new meter is one new module that exports ``METER`` (a :class:`~exporter.sensors.base.MeterSpec`)
plus one line here; the sampler, ``check`` and the configuration pick it up from this table (the
names below are the values of ``--gpu.backend`` and ``--cpu.meter``). Modules are imported only
when a meter is opened or probed, so a backend's library costs nothing where it is not used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .base import MeterError, MeterSpec, Probe

if TYPE_CHECKING:
    from ..config import Config

# name -> module, in the order `auto` tries them
GPU_BACKENDS: dict[str, str] = {
    "nvml": "exporter.sensors.nvml",
    "amdsmi": "exporter.sensors.amdgpu",
    "simulated": "exporter.sensors.simnvml",   # a test double: never chosen by auto
    "simulated-amd": "exporter.sensors.simamdsmi",   # a test double of amdsmi: never chosen by auto
}
CPU_METERS: dict[str, str] = {
    "rapl": "exporter.sensors.rapl",
    "hwmon": "exporter.sensors.hwmon",             # Grace / Arm servers, amd_energy, ACPI meters
    "estimate": "exporter.sensors.cpu_estimate",   # always usable: the last resort
}


def table(kind: str) -> dict[str, str]:
    return GPU_BACKENDS if kind == "gpu" else CPU_METERS


def spec(kind: str, name: str) -> MeterSpec:
    meter: MeterSpec = importlib.import_module(table(kind)[name]).METER
    return meter


def specs(kind: str) -> list[MeterSpec]:
    return [spec(kind, name) for name in table(kind)]


def open_gpu(cfg: "Config") -> Any:
    """The GPU backend ``--gpu.backend`` names; for ``auto``, the first of the auto-eligible
    backends whose devices are usable, else the first one in its failed state (so that its
    state, e.g. ``no_library``, is reported); None for ``none``."""
    name = cfg.gpu.backend
    if name == "none":
        return None
    if name != "auto":
        return spec("gpu", name).open(cfg)
    first = None
    for s in specs("gpu"):
        if not s.auto:
            continue
        meter = s.open(cfg)
        if s.usable(meter):
            if first is not None:
                first.close()
            return meter
        if first is None:
            first = meter
        else:
            meter.close()
    return first


def open_cpu(cfg: "Config") -> Any:
    """The CPU meter ``--cpu.meter`` names (MeterError when it is not usable here); for ``auto``
    the first usable one in registry order (``--cpu.rapl=off`` skips RAPL)."""
    name = cfg.cpu.meter
    if name != "auto":
        s = spec("cpu", name)
        meter = s.open(cfg)
        if not s.usable(meter):
            raise MeterError(f"cpu.meter={name}: not usable here: {s.probe(cfg).headline}")
        return meter
    for s in specs("cpu"):
        if s.name == "rapl" and cfg.cpu.rapl == "off":
            continue
        meter = s.open(cfg)
        if s.usable(meter):
            return meter
    raise MeterError("no CPU meter is usable (the estimate always should be: a bug)")


def probe_all(cfg: "Config") -> list[Probe]:
    """Every registered meter, usable or not, with the reason (for ``wattprint check``)."""
    return [s.probe(cfg) for kind in ("gpu", "cpu") for s in specs(kind)]
