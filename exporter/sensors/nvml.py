"""GPU meter over NVML (``nvidia-ml-py``, imported as ``pynvml``), or the simulated NVML.

Per GPU: index, UUID, name, the total-energy counter (mJ) where supported — else the power gauge
(mW), integrated by the sampler — memory, compute processes (pid, bytes) and per-process SM
utilisation samples. A GPU that errors is reported and skipped; the others go on. No NVML library
on the host is a normal state (``state="no_library"``), reported once, not an error storm.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable

import pynvml
from pynvml import NVMLError

from .base import GpuDevice, GpuReading, GpuStatus, MeterSpec, Probe
from .session import REOPEN_AFTER_READS, REOPEN_MAX_S, REOPEN_MIN_S, LibrarySession, opened, usable

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger(__name__)

# NVML errors and what a person should do about them (used by `check` and the logs)
_ADVICE = {
    pynvml.NVML_ERROR_LIBRARY_NOT_FOUND:
        "libnvidia-ml.so.1 not found: no NVIDIA driver on this host, or the container was started "
        "without the NVIDIA runtime (docker --gpus all / runtimeClassName: nvidia / the GPU operator).",
    pynvml.NVML_ERROR_DRIVER_NOT_LOADED:
        "the NVIDIA kernel driver is not loaded: check `nvidia-smi` and `lsmod | grep nvidia`.",
    pynvml.NVML_ERROR_NO_PERMISSION:
        "no permission to open /dev/nvidia*: run with access to the GPU device files.",
    pynvml.NVML_ERROR_GPU_IS_LOST:
        "the GPU fell off the bus (Xid 79): it needs a reset or a reboot; other GPUs go on.",
    pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH:
        "NVML library and kernel driver versions differ: reboot after a driver upgrade.",
}


def error_kind(e: NVMLError) -> str:
    """A stable, low-cardinality name for an NVML error (``GpuIsLost`` → ``gpu_is_lost``)."""
    name = type(e).__name__.removeprefix("NVMLError_") or "unknown"
    out = "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
    return out if out != "nvml_error" else f"code_{getattr(e, 'value', 'unknown')}"


def advice(e: NVMLError) -> str:
    return _ADVICE.get(getattr(e, "value", None), str(e))


COUNTER_ABSENT = (pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
__all__ = ["GpuMeter", "REOPEN_AFTER_READS", "REOPEN_MAX_S", "REOPEN_MIN_S", "error_kind", "advice", "opened", "usable"]
NvmlStatus = GpuStatus  # the name this module used before the meter protocols


class GpuMeter(LibrarySession):
    """Reads every GPU once per sample. ``lib`` is ``pynvml`` or a ``SimulatedNVML``."""
    library = "NVML"

    def __init__(self, lib: Any = pynvml, backend: str = "nvml", clock: Callable[[], float] | None = None) -> None:
        super().__init__(backend, clock or getattr(lib, "clock", None) or time.monotonic)  # a simulated NVML brings its own
        self.lib = lib
        self._util_ts: dict[int, dict[int, int]] = {}  # gpu -> pid -> newest sample timestamp (µs)
        self._util_sum: dict[int, dict[int, float]] = {}  # gpu -> pid -> Σ smUtil not yet read
        self._residents: dict[int, int] = {}  # gpu -> processes seen at its last read
        self._proc_calls = [f for f in (getattr(lib, "nvmlDeviceGetComputeRunningProcesses", None),
                                        getattr(lib, "nvmlDeviceGetComputeRunningProcesses_v2", None)) if f]

    def open(self) -> GpuStatus:
        lib = self.lib
        try:
            lib.nvmlInit()
        except NVMLError as e:
            code = getattr(e, "value", None)
            state = {pynvml.NVML_ERROR_LIBRARY_NOT_FOUND: "no_library",
                     pynvml.NVML_ERROR_DRIVER_NOT_LOADED: "driver_not_loaded"}.get(code, "error")
            return self._failed_open(GpuStatus(state, advice(e), backend=self.backend))
        driver = _text(_try(lib.nvmlSystemGetDriverVersion) or "")
        self.devices = []
        for i in range(lib.nvmlDeviceGetCount()):
            try:
                self.devices.append(self._discover(i))
            except NVMLError as e:
                self.undiscovered[i] = error_kind(e)
                log.warning("GPU %d not discovered yet (retried every sample): %s", i, advice(e))
        self.status = GpuStatus("ok", f"{len(self.devices)} GPU(s)", driver, self.backend)
        return self.status

    def _discover(self, i: int) -> GpuDevice:
        lib = self.lib
        h = lib.nvmlDeviceGetHandleByIndex(i)
        method = "counter"
        try:
            lib.nvmlDeviceGetTotalEnergyConsumption(h)
        except NVMLError as e:
            if getattr(e, "value", None) != pynvml.NVML_ERROR_NOT_SUPPORTED:
                raise
            method = "power_integration"
        try:
            cur, _pending = lib.nvmlDeviceGetMigMode(h)
            mig = "enabled" if cur == pynvml.NVML_DEVICE_MIG_ENABLE else "disabled"
        except NVMLError:
            mig = "unsupported"
        mem = _try(lambda: lib.nvmlDeviceGetMemoryInfo(h))
        limit_mw = _try(lambda: lib.nvmlDeviceGetEnforcedPowerLimit(h))  # mW (NVML >= 4.304)
        return GpuDevice(i, _text(lib.nvmlDeviceGetUUID(h)), _text(lib.nvmlDeviceGetName(h)), h,
                         method, mig, getattr(mem, "total", 0) or 0,
                         limit_mw / 1000.0 if isinstance(limit_mw, int) and limit_mw > 0 else 0.0)

    def _open_again(self) -> GpuStatus:
        try:
            return self.open()
        except NVMLError as e:  # the device count or a handle failed mid-open
            self.status = GpuStatus("error", advice(e), backend=self.backend)
            return self.status

    def _shutdown(self) -> None:
        _try(self.lib.nvmlShutdown)

    def _new_session(self) -> None:
        self._util_ts, self._util_sum, self._residents = {}, {}, {}

    def _retry_discovery(self) -> None:
        """A GPU that failed at start-up is tried again each sample; counted from its first good read."""
        for i in list(self.undiscovered):
            try:
                self.devices.append(self._discover(i))
            except NVMLError as e:
                self.undiscovered[i] = error_kind(e)
                continue
            del self.undiscovered[i]
            self.devices.sort(key=lambda d: d.index)
            log.info("GPU %d discovered", i)

    def _read_one(self, d: GpuDevice) -> GpuReading:
        """Energy (or power) first, each other field on its own: a field that fails degrades alone
        and is named in ``field_errors``, and the energy is still booked. An energy-counter error
        fails the reading (``error``: nothing booked, the counter's next good read covers the
        gap), except a counter the driver does not have (NOT_SUPPORTED, FUNCTION_NOT_FOUND): the
        device then integrates power from that read on."""
        lib, h = self.lib, d.handle
        r = GpuReading(d)
        if d.energy_method == "counter":
            try:
                r.energy_mj = int(lib.nvmlDeviceGetTotalEnergyConsumption(h))
            except NVMLError as e:
                if getattr(e, "value", None) not in COUNTER_ABSENT:
                    r.error = error_kind(e)
                    return r
                log.warning("GPU %d: no energy counter in this driver (%s): integrating power from now on",
                            d.index, error_kind(e))
                d.energy_method = "power_integration"
                r.field_errors["energy"] = error_kind(e)
        try:
            r.power_mw = int(lib.nvmlDeviceGetPowerUsage(h))
        except NVMLError as e:
            if r.energy_mj is None:
                r.error = error_kind(e)
                return r
            r.field_errors["power"] = error_kind(e)
        try:
            r.memory_used = int(lib.nvmlDeviceGetMemoryInfo(h).used)
        except NVMLError as e:
            r.field_errors["memory"] = error_kind(e)
        try:
            for p in self._processes(h):
                used = p.usedGpuMemory
                r.processes[int(p.pid)] = r.processes.get(int(p.pid), 0) + (int(used) if used else 0)
        except NVMLError as e:
            r.processes.clear()  # residents unknown: the energy goes to the GPU's owner or unallocated
            r.field_errors["processes"] = error_kind(e)
        self._read_util(d, r)
        return r

    def _processes(self, h: Any) -> list:
        """The compute processes, through the newest process-list symbol the driver has:
        nvidia-ml-py >= 12.535 calls ``..._v3``, which drivers before R510 lack (FunctionNotFound);
        then ``..._v2``. The first symbol that works is kept."""
        while True:
            fn = self._proc_calls[0]
            try:
                return fn(h)
            except NVMLError as e:
                if getattr(e, "value", None) != pynvml.NVML_ERROR_FUNCTION_NOT_FOUND or len(self._proc_calls) == 1:
                    raise
                log.info("NVML: %s is missing in this driver; using the older symbol", getattr(fn, "__name__", fn))
                self._proc_calls = self._proc_calls[1:]

    @property
    def needs_polling(self) -> bool:
        """Whether any GPU is shared, so that ``poll_util`` between samples has work to do."""
        return any(self._residents.get(d.index, 2) >= 2 for d in self.devices)

    def poll_util(self) -> None:
        """Collect new per-process utilisation samples between samples (cheap: one NVML call per
        GPU). NVML returns only each process's newest sample, refreshed about every 200 ms, so
        one read per sample interval would see one sample in five; the sampler calls this every
        ``util_poll_s`` and ``read()`` hands over the sum.

        Only GPUs that two or more processes shared at their last read are polled: utilisation
        only splits a GPU's active energy between its residents, and a GPU with one resident
        (the common case) or none needs no split — its read at sample time is enough."""
        for d in self.devices:
            if self._residents.get(d.index, 2) >= 2:
                self._collect_util(d)

    def _collect_util(self, d: GpuDevice) -> bool:
        """Add samples newer than each pid's last one to the pending sums; False on an error
        other than NOT_FOUND (no sample: idle)."""
        try:
            samples = self.lib.nvmlDeviceGetProcessUtilization(d.handle, 0)
        except NVMLError as e:
            # NOT_FOUND: no sample; SUCCESS(0) is pynvml's "empty list" quirk
            return getattr(e, "value", None) in (pynvml.NVML_ERROR_NOT_FOUND, 0)
        seen = self._util_ts.setdefault(d.index, {})
        pending = self._util_sum.setdefault(d.index, {})
        for s in samples:
            pid, ts = int(s.pid), int(s.timeStamp)
            if ts > seen.get(pid, 0):
                pending[pid] = pending.get(pid, 0.0) + float(s.smUtil)
                seen[pid] = ts
        if len(seen) > 4 * len(samples) + 64:  # forget pids that are long gone
            live = {int(s.pid) for s in samples}
            self._util_ts[d.index] = {pid: ts for pid, ts in seen.items() if pid in live}
        return True

    def _read_util(self, d: GpuDevice, r: GpuReading) -> None:
        """SM utilisation per pid since the last read: the sum of each pid's new samples.

        Each process is sampled at its own moment, so samples are de-duplicated per (GPU, pid)
        by timestamp, never with one "last seen" for the whole GPU (that would drop a process
        whose samples lag another's). Sums weight each sample equally: time-weighted shares.
        """
        r.util_available = self._collect_util(d)
        r.sm_util = self._util_sum.pop(d.index, {})
        self._residents[d.index] = len(r.processes.keys() | r.sm_util.keys())

    def close(self) -> None:
        if self.status.state == "ok":
            _try(self.lib.nvmlShutdown)


def _try(fn: Any) -> Any:
    try:
        return fn()
    except NVMLError:
        return None


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# --- registry entry ---------------------------------------------------------------------------

NO_LIBRARY_ADVICE = ("GPU: install the NVIDIA driver, or run the container with the NVIDIA runtime. "
                     "Without it Wattprint measures CPU only.")


def describe(meter: Any, name: str, error: str = "", no_library_advice: str = NO_LIBRARY_ADVICE) -> Probe:
    """What ``check`` shows of a GPU backend (NVML's, or another vendor's with the same protocol):
    its state and, per GPU, one read."""
    if meter is None:
        return Probe(name, "gpu", False, f"GPU ({name}): error — {error}",
                     info={"backend": name, "state": "error", "detail": error, "driver": "", "gpus": []},
                     advice=[f"GPU: {error}"])
    st = meter.status
    gpus, lines = [], []
    for r in meter.read() if st.state == "ok" else []:
        d = r.device
        gpus.append({"index": d.index, "uuid": d.uuid, "name": d.name, "energy_method": d.energy_method,
                     "mig_mode": d.mig_mode, "power_w": (r.power_mw or 0) / 1000,
                     "memory_total_bytes": d.memory_total, "processes": len(r.processes),
                     "error": r.error, "degraded": dict(r.field_errors), "pci_bus_id": d.pci_bus_id})
        err = f"  ERROR {r.error}" if r.error else ""
        err += "".join(f"  DEGRADED {f}: {k}" for f, k in r.field_errors.items())
        pci = f", PCI {d.pci_bus_id}" if d.pci_bus_id else ""
        lines.append(f"GPU {d.index} {d.name} {d.uuid}: energy via {d.energy_method}, "
                     f"MIG {d.mig_mode}{pci}, {(r.power_mw or 0) / 1000:.1f} W, {len(r.processes)} process(es){err}")
    meter.close()
    advice_ = []
    if st.state == "no_library":
        advice_.append(no_library_advice)
    elif st.state in ("driver_not_loaded", "error"):
        advice_.append(f"GPU: {st.detail}")
    headline = f"GPU ({st.backend}): {st.state} — {st.detail}" + (f", driver {st.driver}" if st.driver else "")
    return Probe(name, "gpu", st.state == "ok" and bool(gpus), headline, lines,
                 {"backend": st.backend, "state": st.state, "detail": st.detail, "driver": st.driver,
                  "gpus": gpus}, advice_)


def _probe(cfg: "Config") -> Probe:
    meter = GpuMeter()
    meter.open()  # a probe reports a failed open, it does not raise
    return describe(meter, "nvml")


METER = MeterSpec("nvml", "gpu", "NVIDIA GPUs through NVML (nvidia-ml-py): energy counter or power, "
                  "processes, per-process SM utilisation", auto=True,
                  open=lambda cfg: opened(GpuMeter(), cfg, "nvml"), probe=_probe, usable=usable)
