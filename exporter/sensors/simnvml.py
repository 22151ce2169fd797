"""A simulated NVML: a test double at the NVML boundary, selected only by ``--gpu.backend=simulated``.

It exposes the subset of ``pynvml`` that Wattprint calls, with NVML's own shapes and units:
energy in millijoules (an unsigned counter since "driver load"), power in milliwatts, memory in
bytes, process samples with ``pid/timeStamp(µs)/smUtil``, and errors raised as pynvml's own
``NVMLError`` subclasses (``NVMLError(NVML_ERROR_GPU_IS_LOST)`` becomes ``NVMLError_GpuIsLost``).
Power follows a scenario: ``idle_w + (max_w - idle_w) * min(1, Σ sm_util / 100)``, piecewise
constant per phase, so the true energy of any interval is known exactly.

Scenario YAML (see ``tests/fixtures/sim/``)::

    library: present            # or: missing (NVMLError_LibraryNotFound), driver_not_loaded
    driver_version: "550.54.15"
    gpus:
      - name: NVIDIA H100 80GB HBM3
        idle_w: 70
        max_w: 700
        memory_total_gib: 80
        energy_counter: true    # false: TotalEnergyConsumption raises NotSupported
        mig: false
        phases:                 # or a single `processes:` list for the whole run
          - at_s: 0
            processes: [{pid: 1234, memory_gib: 20, sm_util: 75}]
        faults:                 # errors injected on a time window since nvmlInit
          - {call: energy, error: GPU_IS_LOST, after_s: 5, for_s: 10}
        energy_resets_at_s: [30]   # driver reload: the counter restarts from 0
    driver_reloads:             # the whole driver goes away and comes back (an upgrade, a reset)
      - {at_s: 60, down_s: 5, stale_error: UNINITIALIZED}
                                # while down every call raises DRIVER_NOT_LOADED; after, every
                                # counter restarts from 0 and handles of the old session raise
                                # stale_error until nvmlInit() is called again
    start_unix: 1790000000.0    # optional: time zero as a Unix time, so several processes
                                # (the daemon and a validation script) see the same counters

A GPU may carry ``traffic:`` (:mod:`exporter.sensors.simtraffic`): its power is then
``idle_w`` plus the active power of simulated inference traffic, whose token counters a simulated
server serves from the same schedule.

A process may give ``pid_file: PATH`` instead of ``pid``: it is present once the file holds a pid.

A GPU with ``mig: true`` may carry ``mig_instances:`` (:mod:`exporter.sensors.simmig`): its MIG
devices, their processes and GPM utilisation, instead of ``processes``/``phases``.
"""

from __future__ import annotations

import math
import time
import uuid as _uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import pynvml
import yaml

from pynvml import NVMLError

from .simmig import MigCalls, MigHandle, MigScenarioError, SimMig, mig_memory_used, parse_mig


GIB = 1024**3
UTIL_PERIOD_S = 0.2  # an H200 (driver 580) refreshed each process's sample about every 200 ms
_CALLS = {
    "energy": "nvmlDeviceGetTotalEnergyConsumption",
    "power": "nvmlDeviceGetPowerUsage",
    "memory": "nvmlDeviceGetMemoryInfo",
    "processes": "nvmlDeviceGetComputeRunningProcesses",
    "processes_v2": "nvmlDeviceGetComputeRunningProcesses_v2",
    "utilization": "nvmlDeviceGetProcessUtilization",
    "name": "nvmlDeviceGetName",
    "handle": "nvmlDeviceGetHandleByIndex",
    "mig_handle": "nvmlDeviceGetMigDeviceHandleByIndex",
    "mig_count": "nvmlDeviceGetMaxMigDeviceCount",
    "mig_mode": "nvmlDeviceGetMigMode",
    "gpm": "nvmlGpmMigSampleGet",
}


class ScenarioError(ValueError):
    pass


@dataclass
class _Proc:
    pid: int
    memory_bytes: int
    sm_util: float
    pid_file: str = ""  # when set, the pid is read from this file at query time (absent: no process)

    def live_pid(self) -> int | None:
        if not self.pid_file:
            return self.pid
        try:
            with open(self.pid_file) as fh:
                return int(fh.read().strip())
        except (OSError, ValueError):
            return None


@dataclass
class _Phase:
    at_s: float
    procs: list[_Proc]


@dataclass
class _Fault:
    call: str
    code: int
    after_s: float
    for_s: float

    def active(self, t: float) -> bool:
        return self.after_s <= t < self.after_s + self.for_s


@dataclass
class _Reload:
    at_s: float
    down_s: float
    stale_code: int

    @property
    def end_s(self) -> float:
        return self.at_s + self.down_s


@dataclass
class _Handle:
    """A device handle of one NVML session (nvmlInit): stale once the driver reloads after it."""
    gpu: "_Gpu"
    session_s: float


@dataclass
class _Gpu:
    index: int
    name: str
    uuid: str
    idle_w: float
    max_w: float
    memory_total: int
    energy_counter: bool
    mig: bool
    phases: list[_Phase]
    faults: list[_Fault]
    resets: list[float]
    base_mj: int = 0
    traffic: Any = None  # a simtraffic.Traffic: power from simulated inference traffic instead of sm_util
    mig_state: SimMig | None = None  # MIG instances (mig_instances:), else None

    def power_at(self, t: float) -> float:
        if self.traffic is not None:
            return self.idle_w + self.traffic.active_w(t)
        return self.power_w(self.phase_at(t).procs)

    def power_w(self, procs: list[_Proc]) -> float:
        if self.mig_state is not None:  # the instances' SM utilisation, each by its slices
            return self.idle_w + (self.max_w - self.idle_w) * self.mig_state.busy_fraction()
        util = min(1.0, sum(p.sm_util for p in procs) / 100.0)
        return self.idle_w + (self.max_w - self.idle_w) * util

    def procs_at(self, t: float) -> list[tuple[int, _Proc]]:
        """(pid, process) of the processes present at ``t`` (pid-file processes once their file exists);
        in MIG mode every instance's (the aggregate a GPU handle answers)."""
        if self.mig_state is not None:  # (no instance: no process can run on the GPU)
            return [(pid, p) for i in self.mig_state.instances for p in i.procs if (pid := p.live_pid()) is not None]
        return [(pid, p) for p in self.phase_at(t).procs if (pid := p.live_pid()) is not None]

    def phase_at(self, t: float) -> _Phase:
        cur = self.phases[0]
        for ph in self.phases:
            if ph.at_s <= t:
                cur = ph
        return cur

    def energy_j(self, t0: float, t1: float) -> float:
        """Exact energy between two times since init (piecewise constant power)."""
        if self.traffic is not None:
            return self.idle_w * (t1 - t0) + self.traffic.totals(t1)[2] - self.traffic.totals(t0)[2]
        total = 0.0
        bounds = [ph.at_s for ph in self.phases] + [float("inf")]
        for ph, end in zip(self.phases, bounds[1:]):
            lo, hi = max(t0, ph.at_s), min(t1, end)
            if hi > lo:
                total += self.power_w(ph.procs) * (hi - lo)
        return total


SimulatedGpu, SessionHandle = _Gpu, _Handle  # for another vendor's simulated library


def _num(d: dict, key: str, default: Any, where: str) -> float:
    v = d.get(key, default)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
        raise ScenarioError(f"{where}.{key}: expected a non-negative number, got {v!r}")
    return float(v)


def _procs(items: Any, where: str) -> list[_Proc]:
    if not isinstance(items, list):
        raise ScenarioError(f"{where}: expected a list of processes")
    return [_Proc(int(_num(p, "pid", 0 if "pid_file" in p else None, f"{where}[{i}]")),
                  int(_num(p, "memory_gib", 1, f"{where}[{i}]") * GIB),
                  _num(p, "sm_util", 0, f"{where}[{i}]"), str(p.get("pid_file", "")))
            for i, p in enumerate(items)]


def _error_code(name: str, where: str) -> int:
    code = getattr(pynvml, f"NVML_ERROR_{str(name).upper()}", None)
    if code is None:
        raise ScenarioError(f"{where}.error: unknown NVML error {name!r} (e.g. GPU_IS_LOST, UNKNOWN, TIMEOUT)")
    return code


LIBRARIES = ("present", "missing", "driver_not_loaded")


def parse_scenario(data: dict, error_code: Callable[[str, str], int] = _error_code,
                   calls: dict[str, str] = _CALLS, libraries: tuple[str, ...] = LIBRARIES) -> tuple[str, str, list[_Gpu]]:
    """The scenario's library state, driver version and GPUs. Another vendor's simulated library
    (:mod:`exporter.sensors.simamdsmi`) passes its own error names, calls and library states."""
    if not isinstance(data, dict):
        raise ScenarioError("scenario: top level must be a mapping")
    library = str(data.get("library", "present"))
    if library not in libraries:
        raise ScenarioError(f"library: {library!r} is not one of {', '.join(libraries)}")
    gpus = []
    for i, g in enumerate(data.get("gpus") or []):
        where = f"gpus[{i}]"
        if "phases" in g:
            phases = [_Phase(_num(ph, "at_s", 0, f"{where}.phases[{j}]"),
                             _procs(ph.get("processes", []), f"{where}.phases[{j}].processes"))
                      for j, ph in enumerate(g["phases"])]
            phases.sort(key=lambda ph: ph.at_s)
            if phases[0].at_s > 0:
                phases.insert(0, _Phase(0.0, []))
        else:
            phases = [_Phase(0.0, _procs(g.get("processes", []), f"{where}.processes"))]
        faults = []
        for j, f in enumerate(g.get("faults") or []):
            call = f.get("call", "all")
            if call != "all" and call not in calls:
                raise ScenarioError(f"{where}.faults[{j}].call: {call!r} not in {sorted(calls)} or 'all'")
            faults.append(_Fault(call, error_code(f.get("error", "UNKNOWN"), f"{where}.faults[{j}]"),
                                 _num(f, "after_s", 0, f"{where}.faults[{j}]"),
                                 _num(f, "for_s", float("inf"), f"{where}.faults[{j}]")))
        idle, mx = _num(g, "idle_w", 60, where), _num(g, "max_w", 700, where)
        if mx < idle:
            raise ScenarioError(f"{where}: max_w ({mx}) is below idle_w ({idle})")
        gpus.append(_Gpu(
            index=i, name=str(g.get("name", "NVIDIA H100 80GB HBM3")),
            uuid=str(g.get("uuid") or f"GPU-{_uuid.uuid5(_uuid.NAMESPACE_OID, f'wattprint-sim-{i}')}"),
            idle_w=idle, max_w=mx, memory_total=int(_num(g, "memory_total_gib", 80, where) * GIB),
            energy_counter=bool(g.get("energy_counter", True)), mig=bool(g.get("mig", False)),
            phases=phases, faults=faults, resets=sorted(float(x) for x in g.get("energy_resets_at_s", [])),
            base_mj=int(_num(g, "initial_energy_mj", 1_000_000_000 + 7_919 * i, where)),
            traffic=_traffic(g.get("traffic"), f"{where}.traffic"), mig_state=_mig(g, where, i)))
    return library, str(data.get("driver_version", "550.54.15")), gpus


def _mig(g: dict, where: str, index: int) -> SimMig | None:
    try:
        return parse_mig(g, where, index, _procs, _num)
    except MigScenarioError as e:
        raise ScenarioError(str(e)) from None


def _traffic(spec: Any, where: str) -> Any:
    if spec is None:
        return None
    from .simtraffic import Traffic, TrafficError  # only for a GPU that has traffic

    try:
        return Traffic.parse(spec, where)
    except TrafficError as e:
        raise ScenarioError(str(e)) from None


def parse_reloads(data: dict, error_code: Callable[[str, str], int] = _error_code,
                  stale_default: str = "UNINITIALIZED") -> list[_Reload]:
    out = []
    for j, r in enumerate(data.get("driver_reloads") or []):
        where = f"driver_reloads[{j}]"
        if not isinstance(r, dict):
            raise ScenarioError(f"{where}: expected a mapping with at_s, down_s, stale_error")
        out.append(_Reload(_num(r, "at_s", None, where), _num(r, "down_s", 0, where),
                           error_code(r.get("stale_error", stale_default), where)))
    return sorted(out, key=lambda r: r.at_s)


def read_scenario(path: str) -> Any:
    """The parsed YAML of ``--gpu.simulation-file``; ScenarioError naming the file."""
    try:
        with open(path) as fh:
            return yaml.safe_load(fh)
    except OSError as e:
        raise ScenarioError(f"--gpu.simulation-file {path!r}: cannot read: {e.strerror}") from None


@dataclass
class _MemInfo:
    total: int
    free: int
    used: int


@dataclass
class _ProcInfo:  # shape of pynvml's c_nvmlProcessInfo_v3_t as the Python wrapper returns it
    pid: int
    usedGpuMemory: int | None
    gpuInstanceId: int = 0xFFFFFFFF
    computeInstanceId: int = 0xFFFFFFFF


@dataclass
class _UtilSample:  # shape of c_nvmlProcessUtilizationSample_t
    pid: int
    timeStamp: int
    smUtil: int
    memUtil: int = 0
    encUtil: int = 0
    decUtil: int = 0


@dataclass
class SimulatedLibrary:
    """What every simulated vendor library holds: the scenario's GPUs, library state, driver
    reloads and the time of its first init (``load`` fills them from the YAML)."""

    scenario_path: str
    clock: Callable[[], float] = time.monotonic
    _t0: float | None = field(default=None, init=False)
    _gpus: list[_Gpu] = field(default_factory=list, init=False)
    _library: str = field(default="present", init=False)
    _driver: str = field(default="", init=False)
    _reloads: list[_Reload] = field(default_factory=list, init=False)
    _session_s: float = field(default=0.0, init=False)

    @classmethod
    def from_file(cls, path: str, clock: Callable[[], float] = time.monotonic) -> Any:
        sim = cls(path, clock)
        sim.load(read_scenario(path))
        return sim

    def load(self, data: dict) -> None:
        raise NotImplementedError

    def start_timebase(self, data: dict) -> None:
        """After a scenario is parsed: every reload restarts every counter, and ``start_unix``
        makes time zero a Unix time shared by several processes (the daemon and a validation script)."""
        for gpu in self._gpus:
            gpu.resets = sorted(gpu.resets + [r.end_s for r in self._reloads])
        if data.get("start_unix") is not None:
            self.clock, self._t0 = time.time, float(data["start_unix"])

    def true_energy_j(self, index: int, t0: float, t1: float) -> float:
        """Ground truth for tests: the energy GPU ``index`` used between two elapsed times."""
        return self._gpus[index].energy_j(t0, t1)


@dataclass
class SimulatedNVML(SimulatedLibrary, MigCalls):
    """Duck-typed stand-in for the ``pynvml`` module."""

    gpm_buffers: dict[int, Any] = field(default_factory=dict, init=False)   # nvmlGpmSampleAlloc'd
    gpm_samples: dict[int, tuple[Any, int, float]] = field(default_factory=dict, init=False)

    # constants and errors the meter uses, re-exported from pynvml
    NVMLError = NVMLError

    def load(self, data: dict) -> None:
        """Take a parsed scenario (the YAML's mapping)."""
        self._library, self._driver, self._gpus = parse_scenario(data)
        self._reloads = parse_reloads(data)
        self.start_timebase(data)

    # --- helpers ---------------------------------------------------------------------------
    def elapsed(self) -> float:
        if self._t0 is None:
            raise NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        t = self.clock() - self._t0
        if any(r.at_s <= t < r.end_s for r in self._reloads):
            raise NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
        return t

    def _gpu(self, handle: Any, call: str) -> tuple[_Gpu, float]:
        t = self.elapsed()
        if isinstance(handle, (_Handle, MigHandle)):
            for r in self._reloads:
                if handle.session_s < r.end_s <= t:
                    raise NVMLError(r.stale_code)
            handle = handle.gpu
        gpu: _Gpu = handle
        for f in gpu.faults:
            if f.active(t) and (f.call == "all" or _CALLS[f.call] == call):
                raise NVMLError(f.code)
        return gpu, t

    # --- the pynvml surface ----------------------------------------------------------------
    def nvmlInit(self) -> None:
        if self._library == "missing":
            raise NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
        if self._library == "driver_not_loaded":
            raise NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
        if self._t0 is None:
            self._t0 = self.clock()
        self._session_s = self.elapsed()  # raises DRIVER_NOT_LOADED while a reload is under way

    def nvmlShutdown(self) -> None:
        self.elapsed()

    def nvmlSystemGetDriverVersion(self) -> str:
        self.elapsed()
        return self._driver

    def nvmlDeviceGetCount(self) -> int:
        self.elapsed()
        return len(self._gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Gpu:
        self.elapsed()
        if not 0 <= index < len(self._gpus):
            raise NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(self._gpu(self._gpus[index], _CALLS["handle"])[0], self._session_s)

    def nvmlDeviceGetName(self, handle: Any) -> str:
        return self._gpu(handle, _CALLS["name"])[0].name

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        gpu = self._gpu(handle, "nvmlDeviceGetUUID")[0]
        return handle.inst.uuid if isinstance(handle, MigHandle) else gpu.uuid

    def nvmlDeviceGetIndex(self, handle: Any) -> int:
        return self._gpu(handle, "nvmlDeviceGetIndex")[0].index

    def nvmlDeviceGetMigMode(self, handle: Any) -> list[int]:
        gpu, _ = self._gpu(handle, "nvmlDeviceGetMigMode")
        if "H100" not in gpu.name and "A100" not in gpu.name and "H200" not in gpu.name and not gpu.mig:
            raise NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        mode = pynvml.NVML_DEVICE_MIG_ENABLE if gpu.mig else pynvml.NVML_DEVICE_MIG_DISABLE
        return [mode, mode]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        gpu, t = self._gpu(handle, _CALLS["energy"])
        if not gpu.energy_counter or isinstance(handle, MigHandle):  # no per-instance energy
            raise NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        since = max([r for r in gpu.resets if r <= t], default=None)
        base = 0 if since is not None else gpu.base_mj
        return base + int(gpu.energy_j(since or 0.0, t) * 1000)

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        gpu, t = self._gpu(handle, _CALLS["power"])
        if isinstance(handle, MigHandle):
            raise NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return int(round(gpu.power_at(t) * 1000))

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        """The power limit in mW: the scenario's ``max_w`` (NVML: nvmlDeviceGetEnforcedPowerLimit)."""
        gpu, _ = self._gpu(handle, "nvmlDeviceGetEnforcedPowerLimit")
        return int(gpu.max_w * 1000)

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> _MemInfo:
        gpu, t = self._gpu(handle, _CALLS["memory"])
        if isinstance(handle, MigHandle):  # the instance's own memory
            total = handle.inst.memory_mb * 1024**2
            used = mig_memory_used(handle.inst)
            return _MemInfo(total, total - used, used)
        used = min(gpu.memory_total, 600 * 1024**2 + sum(p.memory_bytes for _, p in gpu.procs_at(t)))
        return _MemInfo(gpu.memory_total, gpu.memory_total - used, used)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[_ProcInfo]:
        """pynvml's default (``_v3`` since nvidia-ml-py 12.535): a fault
        ``{call: processes, error: FUNCTION_NOT_FOUND}`` plays a driver before R510."""
        gpu, t = self._gpu(handle, _CALLS["processes"])
        return _proc_infos(gpu, handle, t)

    def nvmlDeviceGetComputeRunningProcesses_v2(self, handle: Any) -> list[_ProcInfo]:
        gpu, t = self._gpu(handle, _CALLS["processes_v2"])
        return _proc_infos(gpu, handle, t)

    def nvmlDeviceGetProcessUtilization(self, handle: Any, timeStamp: int) -> list[_UtilSample]:
        """Like NVML on an H200 (driver 580): one entry per active process, its *newest* sample,
        refreshed every ``UTIL_PERIOD_S`` at a phase of its own (so processes' timestamps differ),
        returned only if newer than ``timeStamp`` (µs). NOT_FOUND when none."""
        gpu, t = self._gpu(handle, _CALLS["utilization"])
        if gpu.mig:  # "On MIG-enabled GPUs, querying process utilization is not currently supported."
            raise NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        base_us = (self._t0 or 0.0) * 1e6
        out = []
        for i, (pid, p) in enumerate(gpu.procs_at(t)):
            if p.sm_util <= 0:
                continue
            offset = (i * 0.037) % UTIL_PERIOD_S
            newest = math.floor((t - offset) / UTIL_PERIOD_S) * UTIL_PERIOD_S + offset
            ts = int(base_us + newest * 1e6)
            if newest >= 0 and ts > timeStamp:
                out.append(_UtilSample(pid, ts, int(round(p.sm_util))))
        if not out:
            raise NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return out


def _proc_infos(gpu: _Gpu, handle: Any, t: float) -> list[_ProcInfo]:
    """The processes of a GPU handle (in MIG mode the aggregate, each with its instance ids) or of
    a MIG device handle (its instance's only)."""
    if gpu.mig_state is None:
        return [_ProcInfo(pid, p.memory_bytes) for pid, p in gpu.procs_at(t)]
    insts = [handle.inst] if isinstance(handle, MigHandle) else gpu.mig_state.instances
    return [_ProcInfo(pid, p.memory_bytes, i.gpu_instance, i.compute_instance)
            for i in insts for p in i.procs if (pid := p.live_pid()) is not None]


# --- registry entry ---------------------------------------------------------------------------

def load_simulation(cfg: Any, name: str, cls: type) -> Any:
    """The simulated library of ``--gpu.simulation-file`` (MeterError when missing or bad)."""
    from .base import MeterError

    if not cfg.gpu.simulation_file:
        raise MeterError(f"gpu.backend={name} needs --gpu.simulation-file (a scenario YAML)")
    try:
        return cls.from_file(cfg.gpu.simulation_file)
    except ScenarioError as e:
        raise MeterError(f"--gpu.simulation-file {cfg.gpu.simulation_file!r}: {e}") from None


def not_selected(name: str) -> Any:
    """What ``check`` says of a simulated backend nobody asked for."""
    from .base import Probe

    return Probe(name, "gpu", False, f"GPU ({name}): not selected — a test double, used only "
                 f"with --gpu.backend={name} and --gpu.simulation-file",
                 info={"backend": name, "state": "disabled", "detail": "not selected", "driver": "", "gpus": []})


def _open(cfg: Any) -> Any:
    from .nvml import GpuMeter, opened

    return opened(GpuMeter(load_simulation(cfg, "simulated", SimulatedNVML), backend="simulated"), cfg, "simulated")


def _probe(cfg: Any) -> Any:
    from .base import MeterError
    from .nvml import describe

    if cfg.gpu.backend != "simulated":
        return not_selected("simulated")
    try:
        meter = _open(cfg)
    except MeterError as e:
        return describe(None, "simulated", str(e))
    return describe(meter, "simulated")


def _meter() -> Any:
    from .base import MeterSpec
    from .nvml import usable

    return MeterSpec("simulated", "gpu", "a simulated NVML driven by a scenario file (a test double; its "
                     "metrics say backend=\"simulated\")", auto=False, open=_open, probe=_probe, usable=usable)


METER = _meter()
