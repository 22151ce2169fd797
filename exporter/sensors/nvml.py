"""GPU meter over NVML (``nvidia-ml-py``, imported as ``pynvml``), or the simulated NVML.

Per GPU: index, UUID, name, the total-energy counter (mJ) where supported — else the power gauge
(mW), integrated by the sampler — memory, compute processes (pid, bytes) and per-process SM
utilisation samples. A GPU that errors is reported and skipped; the others go on. No NVML library
on the host is a normal state (``state="no_library"``), reported once, not an error storm.

A GPU in MIG mode (the current mode, asked each read: a pending one applies at a GPU reset,
under a running exporter): its energy counter and power are the whole GPU's; each read also lists its
MIG devices (``nvmlDeviceGetMigDeviceHandleByIndex`` up to ``nvmlDeviceGetMaxMigDeviceCount``,
asked anew each read: handles change when instances are created or destroyed), each with its
GPU/compute instance ids, slices (``nvmlDeviceGetAttributes``), memory and processes (through its
MIG handle) and, where GPM works (Hopper and later), its GPU instance's SM utilisation between
two reads (``nvmlGpmMigSampleGet`` + ``nvmlGpmMetricsGet``, ``NVML_GPM_METRIC_SM_UTIL``).
Per-process utilisation is not supported under MIG and is not asked for.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any, Callable

import pynvml
from pynvml import NVMLError

from .base import GpuDevice, GpuReading, GpuStatus, MeterSpec, MigReading, Probe
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
# GPU instance profiles by size, largest first: the first a MIG GPU answers is its whole GPU
WHOLE_GPU_PROFILES = tuple(getattr(pynvml, f"NVML_GPU_INSTANCE_PROFILE_{n}_SLICE") for n in (8, 7, 6, 4, 3, 2, 1)
                           if hasattr(pynvml, f"NVML_GPU_INSTANCE_PROFILE_{n}_SLICE"))
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
        self._gpm: dict[tuple[int, int], Any] = {}  # (gpu, GPU instance) -> its previous GPM sample
        self._gpm_members: dict[tuple[int, int], frozenset[str]] = {}  # … and the MIG UUIDs it had then
        self._gpm_free: list[Any] = []              # allocated sample buffers not in use
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
        try:
            count = int(lib.nvmlDeviceGetCount())
        except NVMLError as e:  # initialised, but no device list (yet): a failed open, retried
            _try(lib.nvmlShutdown)
            return self._failed_open(GpuStatus("error", f"nvmlDeviceGetCount: {advice(e)}", backend=self.backend))
        self.devices = []
        for i in range(count):
            self._discover_into(i, lambda i=i: self._discover(i), first=True)
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
        d = GpuDevice(i, _text(lib.nvmlDeviceGetUUID(h)), _text(lib.nvmlDeviceGetName(h)), h,
                      method, mig, getattr(mem, "total", 0) or 0,
                      limit_mw / 1000.0 if isinstance(limit_mw, int) and limit_mw > 0 else 0.0)
        if mig == "enabled":
            self._discover_mig(d)
        return d

    def _discover_mig(self, d: GpuDevice) -> None:
        """The GPU's slices (the largest GPU instance profile it answers, the whole-GPU one:
        7 on A100/H100/H200, 4 on an A30, 8 where there is an 8-slice profile) and whether GPM works."""
        lib, h = self.lib, d.handle
        for profile in WHOLE_GPU_PROFILES:
            info = _try(lambda: lib.nvmlDeviceGetGpuInstanceProfileInfo(h, profile))
            if info is not None and int(info.sliceCount) > 0:
                d.mig_slices = int(info.sliceCount)
                break
        else:
            d.mig_slices = 7  # A100, H100, H200 have 7 compute slices
            log.warning("GPU %d: no whole-GPU MIG profile answered: assuming 7 slices", d.index)
        d.mig_activity, d.mig_activity_detail = "slice_share", ""
        try:
            supported = bool(lib.nvmlGpmQueryDeviceSupport(h).isSupportedDevice)
        except NVMLError as e:
            d.mig_activity_detail = f"GPM unavailable: nvmlGpmQueryDeviceSupport: {error_kind(e)}"
            return
        except AttributeError:  # an nvidia-ml-py older than GPM (11.525)
            d.mig_activity_detail = "GPM unavailable: this nvidia-ml-py has no nvmlGpmQueryDeviceSupport"
            return
        if not supported:
            d.mig_activity_detail = "GPM unavailable: not supported on this GPU (Hopper or later)"
        else:
            d.mig_activity = "gpm"

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
        self._gpm, self._gpm_free, self._gpm_members = {}, [], {}  # samples of the old session are gone with it

    def _retry_discovery(self) -> None:
        """A GPU that failed at start-up is tried again each sample; counted from its first good read."""
        for i in list(self.undiscovered):
            self._discover_into(i, lambda i=i: self._discover(i), first=False)

    def _error(self, e: Exception) -> tuple[str, str]:
        return (error_kind(e), advice(e)) if isinstance(e, NVMLError) else super()._error(e)

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
        if d.mig_mode != "unsupported":
            self._check_mig_mode(d, r)
        if d.mig_mode == "enabled":
            self._read_mig(d, r)
            return r
        try:
            for p in self._processes(h):
                used = p.usedGpuMemory
                r.processes[int(p.pid)] = r.processes.get(int(p.pid), 0) + (int(used) if used else 0)
        except NVMLError as e:
            r.processes.clear()  # residents unknown: the energy goes to the GPU's owner or unallocated
            r.field_errors["processes"] = error_kind(e)
        self._read_util(d, r)
        return r

    def _check_mig_mode(self, d: GpuDevice, r: GpuReading) -> None:
        """The MIG mode, asked anew each read: a pending mode (``nvidia-smi -mig``) takes effect
        at the next GPU reset, under a running exporter. The current mode rules, never the
        pending one. A change is logged and counted (``mig_mode: changed``); a MIG GPU's
        slices and GPM support are looked up again. A failed query keeps the known mode, counted."""
        try:
            current, _pending = self.lib.nvmlDeviceGetMigMode(d.handle)
        except NVMLError as e:
            r.field_errors["mig_mode"] = error_kind(e)
            return
        mode = "enabled" if current == pynvml.NVML_DEVICE_MIG_ENABLE else "disabled"
        if mode == d.mig_mode:
            return
        log.warning("GPU %d: MIG mode is now %s (was %s)", d.index, mode, d.mig_mode)
        d.mig_mode = mode
        r.field_errors["mig_mode"] = "changed"
        for key in [k for k in self._gpm if k[0] == d.index]:  # GPM samples of the old layout
            self._gpm_free.append(self._gpm.pop(key))
        self._util_ts.pop(d.index, None)
        self._util_sum.pop(d.index, None)
        if mode == "enabled":
            self._discover_mig(d)

    def _read_mig(self, d: GpuDevice, r: GpuReading) -> None:
        """The GPU's MIG devices, each on its own: one that fails, or whose attributes make no
        sense (no slices, more compute than GPU instance slices, a UUID listed twice), is left
        out and named in ``field_errors`` (its slices then count as free: unallocated, never lost)."""
        lib, h = self.lib, d.handle
        r.mig = []
        try:
            count = int(lib.nvmlDeviceGetMaxMigDeviceCount(h))
        except NVMLError as e:
            r.field_errors["mig"] = error_kind(e)
            count = 0
        for i in range(count):
            try:
                mh = lib.nvmlDeviceGetMigDeviceHandleByIndex(h, i)
            except NVMLError as e:
                if getattr(e, "value", None) != pynvml.NVML_ERROR_NOT_FOUND:  # NOT_FOUND: no device there
                    r.field_errors["mig"] = error_kind(e)
                continue
            try:
                m = self._mig_device(d, mh, r)
            except NVMLError as e:
                r.field_errors["mig"] = error_kind(e)
                continue
            if not 0 < m.ci_slices <= m.slices or any(o.uuid == m.uuid for o in r.mig):
                r.field_errors["mig"] = "unexpected_data"  # no slices, or listed twice: left out
                continue
            r.mig.append(m)
        gi_ci: dict[int, int] = {}  # a GPU instance's slices are shared by its compute instances, by their slices
        for m in r.mig:
            gi_ci[m.gpu_instance] = gi_ci.get(m.gpu_instance, 0) + m.ci_slices
        for m in r.mig:
            m.slices = m.slices * m.ci_slices / gi_ci[m.gpu_instance]
            for pid, b in m.processes.items():
                r.processes[pid] = r.processes.get(pid, 0) + b
        if d.mig_activity == "gpm":
            self._read_gpm(d, r)
        self._residents[d.index] = 0  # nothing to poll between samples: no per-process utilisation

    def _mig_device(self, d: GpuDevice, mh: Any, r: GpuReading) -> MigReading:
        """One MIG device; its process list may fail alone (NO_PERMISSION in an unprivileged
        container): the instance is kept, without residents, so its owner still gets its energy."""
        lib = self.lib
        a = lib.nvmlDeviceGetAttributes(mh)
        gi_slices, ci_slices, mem_mb = int(a.gpuInstanceSliceCount), int(a.computeInstanceSliceCount), int(a.memorySizeMB)
        m = MigReading(_text(lib.nvmlDeviceGetUUID(mh)), int(lib.nvmlDeviceGetGpuInstanceId(mh)),
                       int(lib.nvmlDeviceGetComputeInstanceId(mh)),
                       profile_name(gi_slices, ci_slices, mem_mb, d.memory_total), float(gi_slices),
                       ci_slices, mem_mb * 1024**2)
        m.memory_used = _try(lambda: int(lib.nvmlDeviceGetMemoryInfo(mh).used))
        try:
            for p in self._processes(mh):
                used = p.usedGpuMemory
                m.processes[int(p.pid)] = m.processes.get(int(p.pid), 0) + (int(used) if used else 0)
        except NVMLError as e:
            m.processes.clear()
            r.field_errors["processes"] = error_kind(e)
        return m

    def _read_gpm(self, d: GpuDevice, r: GpuReading) -> None:
        """Each GPU instance's SM utilisation since the previous read, from two GPM samples. The
        first read of an instance has no previous sample (sm_util None: the slice-share fallback
        for that interval), nor has a GPU instance id whose MIG devices changed (destroyed and
        made again between two reads, or a compute instance added); an instance whose sample fails, or whose value is not finite, is
        counted in ``field_errors``."""
        lib = self.lib
        gis = {m.gpu_instance for m in r.mig}
        members = {gi: frozenset(m.uuid for m in r.mig if m.gpu_instance == gi) for gi in gis}
        util: dict[int, float | None] = {}
        for gi in gis:
            key = (d.index, gi)
            try:
                sample = self._gpm_free.pop() if self._gpm_free else lib.nvmlGpmSampleAlloc()
            except NVMLError as e:
                r.field_errors["gpm"] = error_kind(e)
                continue
            try:
                lib.nvmlGpmMigSampleGet(d.handle, gi, sample)
            except NVMLError as e:
                self._gpm_free.append(sample)  # the buffer is reused, never leaked
                r.field_errors["gpm"] = error_kind(e)
                continue
            prev, self._gpm[key] = self._gpm.get(key), sample
            if prev is not None and self._gpm_members.get(key) != members[gi]:
                self._gpm_free.append(prev)  # the GPU instance id was destroyed and made again (its
                prev = None                  # MIG devices are new): the old sample is another instance's
            self._gpm_members[key] = members[gi]
            if prev is None:
                continue
            mg = pynvml.c_nvmlGpmMetricsGet_t()
            mg.version, mg.numMetrics, mg.sample1, mg.sample2 = pynvml.NVML_GPM_METRICS_GET_VERSION, 1, prev, sample
            mg.metrics[0].metricId = pynvml.NVML_GPM_METRIC_SM_UTIL
            try:
                lib.nvmlGpmMetricsGet(mg)
                ret = int(mg.metrics[0].nvmlReturn)
                if ret != pynvml.NVML_SUCCESS:
                    raise NVMLError(ret)
                value = float(mg.metrics[0].value)
                if math.isfinite(value):  # a little past 0..100 is rounding: clamped
                    util[gi] = max(0.0, min(100.0, value))
                else:  # NaN or ±inf (min/max would make NaN 100 %): this interval falls back
                    r.field_errors["gpm"] = "not_finite"
            except NVMLError as e:
                r.field_errors["gpm"] = error_kind(e)
            finally:
                self._gpm_free.append(prev)
        for key in [k for k in self._gpm if k[0] == d.index and k[1] not in gis]:  # destroyed instances
            self._gpm_free.append(self._gpm.pop(key))
            self._gpm_members.pop(key, None)
        for m in r.mig:
            m.sm_util = util.get(m.gpu_instance)

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
            for sample in self._gpm_free + list(self._gpm.values()):
                _try(lambda: self.lib.nvmlGpmSampleFree(sample))
            self._gpm, self._gpm_free = {}, []
            _try(self.lib.nvmlShutdown)


def profile_name(gi_slices: int, ci_slices: int, memory_mb: int, device_memory: int) -> str:
    """A MIG profile's name as NVIDIA's device plugin spells it ("3g.40gb", "1c.3g.40gb"): the
    memory is the instance's fraction of the GPU's, rounded up to eighths, times the GPU's whole
    GiB (NVIDIA/go-nvlib pkg/nvlib/device/mig_profile.go at 18957773, getMigMemorySizeGB). A
    label only (ownership goes by MIG UUID); media-extension profiles lose their "+me" suffix, which
    go-nvlib takes from the profile id, not from the slice counts NVML's attributes give."""
    gib = 1024**3
    if device_memory > 0:
        fraction = math.ceil(memory_mb * 1024**2 / device_memory * 8) / 8
        gb = round(fraction * ((device_memory + gib - 1) // gib))
    else:
        gb = round(memory_mb / 1024)
    name = f"{gi_slices}g.{gb}gb"
    return name if ci_slices == gi_slices else f"{ci_slices}c.{name}"


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
        if d.mig_mode == "enabled":
            gpus[-1]["mig"] = _describe_mig(d, r, lines)
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


def _describe_mig(d: GpuDevice, r: GpuReading, lines: list[str]) -> dict[str, Any]:
    """What ``check`` shows of a MIG GPU: the split's method (and why GPM is not used), and its instances."""
    why = f" ({d.mig_activity_detail})" if d.mig_activity_detail else ""
    instances = r.mig or []
    lines.append(f"  MIG: {d.mig_slices} slices, {len(instances)} instance(s); idle split by slices, active by "
                 f"{d.mig_activity}{why}" + (f"; errors: {r.field_errors}" if r.field_errors else ""))
    for m in instances:
        used = "?" if m.memory_used is None else f"{m.memory_used / 1024**3:.1f}"
        lines.append(f"    GI {m.gpu_instance} CI {m.compute_instance} {m.profile} {m.uuid}: {m.slices:g} slice(s), "
                     f"{used}/{m.memory_total / 1024**3:.1f} GiB, {len(m.processes)} process(es)")
    return {"slices": d.mig_slices, "activity_method": d.mig_activity, "activity_detail": d.mig_activity_detail,
            "instances": [{"uuid": m.uuid, "gpu_instance": m.gpu_instance, "compute_instance": m.compute_instance,
                           "profile": m.profile, "slices": m.slices, "processes": len(m.processes),
                           "memory_used_bytes": m.memory_used, "memory_total_bytes": m.memory_total}
                          for m in instances]}


def _probe(cfg: "Config") -> Probe:
    meter = GpuMeter()
    meter.open()  # a probe reports a failed open, it does not raise
    return describe(meter, "nvml")


METER = MeterSpec("nvml", "gpu", "NVIDIA GPUs through NVML (nvidia-ml-py): energy counter or power, "
                  "processes, per-process SM utilisation", auto=True,
                  open=lambda cfg: opened(GpuMeter(), cfg, "nvml"), probe=_probe, usable=usable)
