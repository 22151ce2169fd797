"""What every meter is: the small protocols the sampler reads through, and the values they return.

Two kinds of meter, each registered by name in :mod:`exporter.sensors.registry`:

* a **GPU backend** (``nvml``, ``simulated``; a vendor backend such as ``amdsmi`` is one more
  module) — discovers its devices and, once per sample, returns one :class:`GpuReading` per
  device with the raw counters (energy in mJ where the device has a counter, power in mW,
  memory, resident processes and their utilisation). It keeps no accounting state: counter
  deltas, resets and idle learning are :mod:`exporter.devices`' job, the same for every vendor.
* a **CPU meter** (``rapl``, ``estimate``; ``hwmon`` is one more module) — returns the joules of
  each of its zones since its previous read, and owns its own baselines, including
  ``checkpoint()``/``restore()`` so that a failed sample can be undone whole.

Each meter module exports ``METER``, a :class:`MeterSpec`: its name, kind, whether ``auto`` may
choose it, how to open it from the configuration and how to explain (``probe``) whether it is
usable here — which ``wattprint check`` prints for every registered meter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:
    from ..config import Config


class MeterError(Exception):
    """A meter the configuration requires cannot be opened."""


# --- GPU ---------------------------------------------------------------------------------------

@dataclass
class GpuDevice:
    index: int
    uuid: str
    name: str
    handle: Any
    energy_method: str          # "counter" | "power_integration"
    mig_mode: str               # "enabled" | "disabled" | "unsupported"
    memory_total: int = 0
    power_limit_w: float = 0.0          # enforced power limit (0: unknown); bounds the idle baseline
    mig_slices: int = 0                 # MIG mode: the GPU's slices (7 on an H100), else 0
    mig_activity: str = ""              # MIG mode: "gpm" (per-instance SM utilisation) or "slice_share"
    mig_activity_detail: str = ""       # why GPM is not used, where it is not
    pci_bus_id: str = ""                # "0000:19:00.0" where the device plugin names GPUs by it (AMD)


@dataclass
class MigReading:
    """One MIG device (a compute instance of a GPU instance) at one read."""
    uuid: str                          # "MIG-…": what the kubelet's pod-resources lists
    gpu_instance: int
    compute_instance: int
    profile: str                       # "3g.40gb", "1c.3g.40gb" (the device plugin's names)
    slices: float                      # the GPU's slices it reserves (its GPU instance's, shared by CIs)
    ci_slices: int = 1                 # its compute instance's slices (of its GPU instance's)
    memory_total: int = 0
    memory_used: int | None = None
    processes: dict[int, int] = field(default_factory=dict)      # pid -> bytes (0 if unknown)
    sm_util: float | None = None       # GPM SM utilisation of its GPU instance since the last read (%)


@dataclass
class GpuReading:
    device: GpuDevice
    energy_mj: int | None = None       # raw energy counter (counter method)
    power_mw: int | None = None
    memory_used: int | None = None
    processes: dict[int, int] = field(default_factory=dict)      # pid -> bytes (0 if unknown)
    sm_util: dict[int, float] = field(default_factory=dict)      # pid -> Σ SM % over its new samples
    util_available: bool = False
    error: str | None = None           # error kind when neither energy nor power could be read
    field_errors: dict[str, str] = field(default_factory=dict)  # field -> error kind (it degraded alone)
    mig: list[MigReading] | None = None  # MIG mode: its instances (None: not in MIG mode)


@dataclass
class GpuStatus:
    state: str                         # "ok" | "no_library" | "driver_not_loaded" | "error" | "disabled"
    detail: str = ""
    driver: str = ""
    backend: str = "nvml"


class GpuBackend(Protocol):
    status: GpuStatus
    devices: list[GpuDevice]
    undiscovered: dict[int, str]       # device index -> error kind of its last discovery try

    def read(self) -> list[GpuReading]: ...

    @property
    def needs_polling(self) -> bool: ...   # poll_util() between samples has work to do

    def poll_util(self) -> None: ...

    def close(self) -> None: ...


# --- CPU ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CpuZone:
    """One energy zone of a CPU meter (a RAPL zone, a hwmon sensor, the whole-node estimate)."""
    zone: str
    socket: str
    domain: str
    method: str                        # the `method` label: rapl | estimate | hwmon | …
    used_in_total: bool                # counted in the node totals (overlapping zones never are)
    readable: bool
    component: str = "cpu"             # the node component it counts toward: cpu | dram


@dataclass
class CpuReading:
    joules: dict[str, float]           # zone -> joules since the previous read
    errors: dict[str, str] = field(default_factory=dict)   # zone -> error kind
    estimated: dict[str, float] = field(default_factory=dict)  # zone -> joules not measured but estimated


class CpuMeter(Protocol):
    name: str

    def cpu_zones(self) -> list[CpuZone]: ...

    def measure(self, dt_s: float, busy_ratio: float | None) -> CpuReading: ...  # None: busy share unknown

    def checkpoint(self) -> Any: ...

    def restore(self, checkpoint: Any) -> None: ...


# --- registry entries --------------------------------------------------------------------------

@dataclass
class Probe:
    """Whether a registered meter is usable on this host, and why; printed by ``check``."""
    name: str
    kind: str                          # "gpu" | "cpu"
    usable: bool
    headline: str                      # one line: what it is and its state
    lines: list[str] = field(default_factory=list)   # detail lines (devices, zones)
    info: dict[str, Any] = field(default_factory=dict)  # the same for --output json
    advice: list[str] = field(default_factory=list)   # what a person should do


@dataclass(frozen=True)
class MeterSpec:
    name: str
    kind: str                          # "gpu" | "cpu"
    summary: str
    auto: bool                         # may --gpu.backend=auto / --cpu.meter=auto choose it
    open: Callable[["Config"], Any]    # the meter (GPU: opened, maybe in a failed state); MeterError
    probe: Callable[["Config"], Probe]
    usable: Callable[[Any], bool] = lambda meter: True
