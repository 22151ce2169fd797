"""GPU meter over AMD SMI (``amdsmi``, AMD's Python binding of libamd_smi), or the simulated one.

Read from the upstream source (ROCm/amdsmi ``amd_smi_lib`` 24.7.0 for ROCm 6.3, commit 0ceca28;
and ROCm/rocm-systems ``projects/amdsmi`` commit 019df16 for ROCm 7):

* ``amdsmi_init(AmdSmiInitFlags.INIT_AMD_GPUS)``, ``amdsmi_get_processor_handles()``,
  ``amdsmi_shut_down()``; a failed call raises ``AmdSmiLibraryException`` whose
  ``get_error_code()`` is an ``amdsmi_status_t`` (``include/amd_smi/amdsmi.h``, :data:`STATUS`),
  or its subclasses ``AmdSmiRetryException``/``AmdSmiTimeoutException``; a bad argument raises
  ``AmdSmiParameterException``, which derives from the base ``AmdSmiException`` only, without a
  code (``amdsmi_exception.py``). Every ``AmdSmiException`` is caught (kind ``parameter`` when it
  has no code), as the binding's README tells callers to.
* ``amdsmi_get_energy_count(h)`` → ``{"energy_accumulator", "counter_resolution", "timestamp"}``
  (ROCm 7); 24.7 adds the same count as ``"power"`` ("deprecating in 6.4"); ROCm 6.0 returned only
  ``"power"``. The count × ``counter_resolution`` (µJ, a C float: 15.3 hard-coded in
  ``rocm_smi.cc`` for every ASIC, while the SMU's unit is 15.259 µJ = 2^-16 J — the library's
  value is used, as ``amd-smi`` does: +0.27 %) is the energy since the driver loaded. The field is
  64 bits since gpu_metrics v1.1 ("v1 mod. (32->64)"), but firmware that keeps a 32-bit
  accumulator (MI100's ``EnergyAccumulator``; MI200 kernels whose ``EnergyAcc64bitHigh << 32``
  lacked the ``(uint64_t)`` cast) wraps at 2^32 counts (65.7 kJ: ~90 s at 750 W). This module
  extends such a counter across its wraps (:class:`Accumulator`), so the reading is a monotonic
  mJ count; a counter that goes back any other way (a driver reload) is handed on as it is, for
  the shared reset logic (:mod:`exporter.pipeline.device`).
* ``amdsmi_get_power_info(h)``: ``socket_power`` (ROCm 7), ``current_socket_power`` (MI300),
  ``average_socket_power`` (MI200) in W; a field the ASIC lacks is the string ``"N/A"``.
* ``amdsmi_get_gpu_vram_usage(h)``: ``vram_total``/``vram_used`` in MiB.
* ``amdsmi_get_gpu_process_list(h)``: since 6.2 a list of dicts ``{pid, mem (bytes),
  engine_usage: {gfx, enc} (ns of engine time since the process opened the GPU), ...}``, read by
  the library from ``/proc/<pid>/fdinfo`` (``fdinfo.cc``: NO_PERM where that is not readable);
  before, a list of process handles for ``amdsmi_get_gpu_process_info(h, p)``. The growth of
  ``gfx`` between two reads is the process's share of the GPU's active energy (like NVML's SM
  samples): ``sm_util`` = Δgfx / Δt as a percentage.
* ``amdsmi_get_gpu_device_uuid``, ``amdsmi_get_gpu_asic_info(h)["market_name"]``,
  ``amdsmi_get_gpu_device_bdf(h)`` (``"0000:19:00.0"``: the id ROCm's Kubernetes device plugin
  gives ``amd.com/gpu`` devices), ``amdsmi_get_power_cap_info(h)["power_cap"]`` (µW),
  ``amdsmi_get_gpu_driver_info(h)["driver_version"]``.

No ``amdsmi`` package is a normal state (``no_library``), as is an installed package without
``libamd_smi.so`` (its wrapper prints a message and the import fails with a KeyError).
"""

from __future__ import annotations

import glob
import grp
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .base import GpuDevice, GpuReading, GpuStatus, MeterSpec, Probe
from .session import LibrarySession, opened, usable

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger(__name__)

# amdsmi_status_t, include/amd_smi/amdsmi.h (amd_smi_lib 24.7.0)
STATUS: dict[str, int] = {
    "SUCCESS": 0, "INVAL": 1, "NOT_SUPPORTED": 2, "NOT_YET_IMPLEMENTED": 3, "FAIL_LOAD_MODULE": 4,
    "FAIL_LOAD_SYMBOL": 5, "DRM_ERROR": 6, "API_FAILED": 7, "TIMEOUT": 8, "RETRY": 9, "NO_PERM": 10,
    "INTERRUPT": 11, "IO": 12, "ADDRESS_FAULT": 13, "FILE_ERROR": 14, "OUT_OF_RESOURCES": 15,
    "INTERNAL_EXCEPTION": 16, "INPUT_OUT_OF_BOUNDS": 17, "INIT_ERROR": 18, "REFCOUNT_OVERFLOW": 19,
    "BUSY": 30, "NOT_FOUND": 31, "NOT_INIT": 32, "NO_SLOT": 33, "DRIVER_NOT_LOADED": 34,
    "NO_DATA": 40, "INSUFFICIENT_SIZE": 41, "UNEXPECTED_SIZE": 42, "UNEXPECTED_DATA": 43,
    "FILE_NOT_FOUND": 52, "ARG_PTR_NULL": 53, "AMDGPU_RESTART_ERR": 54, "SETTING_UNAVAILABLE": 55,
    "MAP_ERROR": 0xFFFFFFFE, "UNKNOWN_ERROR": 0xFFFFFFFF,
}
_NAMES = {code: name.lower() for name, code in STATUS.items()}
COUNTER_ABSENT = (STATUS["NOT_SUPPORTED"], STATUS["NOT_YET_IMPLEMENTED"])
WRAP_COUNTS = 1 << 32              # a 32-bit energy accumulator wraps here
MAX_DEVICE_W = 3000.0              # no accelerator draws more (MI355X: 1.4 kW): bounds a wrap's advance
CAP_SLACK = 1.5                    # … as does the power cap, with room for excursions above it
STALL_S = 10.0                     # a count unchanged this long while the GPU draws power is stuck …
STALL_MIN_J = 100.0                # … once power says it used at least this much meanwhile
MIB = 1024**2
DEV_DIR = "/dev"                   # where /dev/kfd and /dev/dri/renderD* are looked for (tests move it)

NO_LIBRARY_ADVICE = (
    "GPU (AMD): install AMD SMI's Python package from your ROCm release (`pip install amdsmi==<ROCm "
    "version>`, or `pip install /opt/rocm/share/amd_smi`; it loads libamd_smi.so from the "
    "amd-smi-lib package), or use an image that has it. Without it Wattprint does not measure AMD GPUs.")
PERMISSION_ADVICE = (
    "GPU (AMD): give the exporter read/write access to /dev/kfd and /dev/dri/renderD* (mount them; "
    "run with the group that owns them, usually `render`, or `video` on older distributions: "
    "supplementalGroups / --group-add). The process list also needs hostPID and read access to "
    "other processes' /proc/<pid>/fdinfo (CAP_SYS_PTRACE); without it each GPU's energy goes to the "
    "pod the kubelet assigned it.")
_ADVICE = {
    STATUS["DRIVER_NOT_LOADED"]: "the amdgpu kernel driver is not loaded: check `lsmod | grep amdgpu` "
                                 "and `dmesg | grep amdgpu`.",
    STATUS["NO_PERM"]: "permission denied opening the GPU (/dev/kfd, /dev/dri/renderD*): run as a member "
                       "of the `render` group (or `video`) with the device files mounted.",
    STATUS["NOT_INIT"]: "the library lost its session (a driver reload?): it is opened again.",
    STATUS["FAIL_LOAD_MODULE"]: "libamd_smi.so could not load a library it needs: reinstall amd-smi-lib.",
}


def error_kind(e: Exception) -> str:
    """A stable, low-cardinality name for an amdsmi error (``AMDSMI_STATUS_NO_PERM`` → ``no_perm``)."""
    code = _code(e)
    return _NAMES.get(code, f"code_{code}") if code is not None else "parameter"


def advice(e: Exception) -> str:
    code = _code(e)
    return _ADVICE.get(code, f"amdsmi: {_NAMES.get(code, code)}") if code is not None else str(e)


def _code(e: Exception) -> int | None:
    get = getattr(e, "get_error_code", None)
    return int(get()) if callable(get) and get() is not None else None


def import_amdsmi() -> Any:
    """The real ``amdsmi`` module, imported only when this backend is opened or probed."""
    import importlib

    return importlib.import_module("amdsmi")


@dataclass
class Accumulator:
    """One GPU's energy counter extended across 32-bit wraps.

    A count below the previous one is a wrap when the previous one fits in 32 bits and the
    advance it implies (one wrap) is possible in the time since: at most CAP_SLACK × ``limit_w``
    (else MAX_DEVICE_W), and no second wrap could have hidden in the interval. Anything else (a 64-bit
    counter going back, a gap too long to tell) is a restart: the raw count is handed on, and the
    shared accounting bridges the gap from power."""
    raw: int | None = None
    t: float = 0.0
    offset: int = 0
    wraps: int = 0

    def extend(self, raw: int, now: float, resolution_uj: float, limit_w: float) -> int:
        if self.raw is not None and raw < self.raw:
            dt = max(0.0, now - self.t)
            cap_j = (CAP_SLACK * limit_w if limit_w else MAX_DEVICE_W) * dt
            wrapped_j = (raw + WRAP_COUNTS - self.raw) * resolution_uj / 1e6
            if self.raw < WRAP_COUNTS and wrapped_j <= cap_j and cap_j < WRAP_COUNTS * resolution_uj / 1e6:
                self.offset += WRAP_COUNTS
                self.wraps += 1
            else:
                self.offset = 0
        self.raw, self.t = raw, now
        return self.offset + raw


@dataclass
class Stall:
    """A counter that stopped counting while the GPU draws power: amdsmi before ROCm 6.1 did not
    refresh gpu_metrics (ROCm/amdsmi#22, fixed by 78074d7), and an MI100 counter froze until a
    reboot (ROCm/amdsmi#38). While the count stands still, power is integrated alongside; after
    STALL_S (and STALL_MIN_J of power) the count plus that integral is handed on once, so the
    stalled seconds are booked, and the GPU integrates power from then on."""
    count_mj: int
    since_t: float
    last_t: float
    last_w: float
    integrated_mj: float = 0.0

    def update(self, power_w: float, now: float) -> int | None:
        """The count to hand on when the stall is confirmed, else None (this read is fine)."""
        self.integrated_mj += (power_w + self.last_w) / 2 * max(0.0, now - self.last_t) * 1000
        self.last_t, self.last_w = now, power_w
        if now - self.since_t >= STALL_S and self.integrated_mj >= STALL_MIN_J * 1000:
            return self.count_mj + int(self.integrated_mj)
        return None


class AmdGpuMeter(LibrarySession):
    """Reads every AMD GPU once per sample. ``load`` returns ``amdsmi`` or a ``SimulatedAmdSmi``.
    Opening, retrying and reopening after a driver reload: :class:`~.session.LibrarySession`."""
    library = "amdsmi"

    def __init__(self, load: Callable[[], Any] | None = None, backend: str = "amdsmi",
                 clock: Callable[[], float] | None = None) -> None:
        super().__init__(backend, clock or time.monotonic)
        self.load = load or import_amdsmi
        self.lib: Any = None
        self._handles: list[Any] = []
        self._energy: dict[str, Accumulator] = {}          # by UUID: survives a reopen
        self._stall: dict[str, Stall] = {}                 # by UUID: the count's last change
        self._gfx: dict[int, tuple[float, dict[int, int]]] = {}  # gpu -> (time, pid -> gfx ns)

    # --- opening ---------------------------------------------------------------------------
    def open(self) -> GpuStatus:
        if self.lib is None:
            try:
                self.lib = self.load()
            except ImportError as e:
                return self._failed("no_library", f"amdsmi not installed ({e})")
            except Exception as e:  # noqa: BLE001 - the wrapper's KeyError/OSError without libamd_smi.so
                return self._failed("no_library", "the amdsmi package is installed but libamd_smi.so "
                                    f"could not be loaded ({type(e).__name__}: {e}): install amd-smi-lib")
        lib = self.lib
        try:
            lib.amdsmi_init(lib.AmdSmiInitFlags.INIT_AMD_GPUS)
            self._handles = list(lib.amdsmi_get_processor_handles())
        except self._errors as e:
            state = "driver_not_loaded" if _code(e) == STATUS["DRIVER_NOT_LOADED"] else "error"
            return self._failed(state, f"{advice(e)} (AMDSMI_STATUS_{error_kind(e).upper()})")
        self.devices, self.undiscovered = [], {}
        for i, h in enumerate(self._handles):
            self._discover_into(i, lambda i=i, h=h: self._discover(i, h), first=True)
        driver = ""
        if self._handles:
            info = self._try(lambda: lib.amdsmi_get_gpu_driver_info(self._handles[0])) or {}
            driver = str(info.get("driver_version", ""))
        self.status = GpuStatus("ok", f"{len(self.devices)} GPU(s)", driver, self.backend)
        return self.status

    def _failed(self, state: str, detail: str) -> GpuStatus:
        return self._failed_open(GpuStatus(state, detail, backend=self.backend))

    def _discover(self, i: int, h: Any) -> GpuDevice:
        lib = self.lib
        uuid = str(lib.amdsmi_get_gpu_device_uuid(h))
        name = str(lib.amdsmi_get_gpu_asic_info(h).get("market_name") or "N/A")
        method = "counter"
        try:
            if _count(lib.amdsmi_get_energy_count(h)) is None:
                method = "power_integration"
        except self._errors as e:
            if _code(e) not in COUNTER_ABSENT:
                raise
            method = "power_integration"
        vram = self._try(lambda: lib.amdsmi_get_gpu_vram_usage(h)) or {}
        cap = self._try(lambda: lib.amdsmi_get_power_cap_info(h)) or {}
        bdf = self._try(lambda: lib.amdsmi_get_gpu_device_bdf(h)) or ""
        cap_uw = cap.get("power_cap")
        return GpuDevice(i, uuid, name if name != "N/A" else "AMD GPU", h, method, "unsupported",
                         _int(vram.get("vram_total")) * MIB,
                         cap_uw / 1e6 if isinstance(cap_uw, int) and cap_uw > 0 else 0.0,
                         pci_bus_id=str(bdf).lower())

    def _shutdown(self) -> None:
        self._try(self.lib.amdsmi_shut_down)

    def _new_session(self) -> None:
        self._gfx = {}

    # --- reading ---------------------------------------------------------------------------
    def _retry_discovery(self) -> None:
        for i in list(self.undiscovered):
            self._discover_into(i, lambda i=i: self._discover(i, self._handles[i]), first=False)

    def _error(self, e: Exception) -> tuple[str, str]:
        return (error_kind(e), advice(e)) if isinstance(e, self._errors) else super()._error(e)

    def _read_one(self, d: GpuDevice) -> GpuReading:
        """Energy (or power) first, each other field on its own, as for NVML: a field that fails
        degrades alone (``field_errors``); an energy-counter error fails the reading, except a
        counter the ASIC lacks, which switches the GPU to power integration."""
        lib, h = self.lib, d.handle
        Error = self._errors
        r = GpuReading(d)
        now = self.clock()
        if d.energy_method == "counter":
            try:
                e = lib.amdsmi_get_energy_count(h)
                if not isinstance(e, dict):
                    raise ValueError(f"amdsmi_get_energy_count returned {type(e).__name__}, not a dict")
                raw, res = _count(e), _number(e.get("counter_resolution"))
                if raw is None or not res:
                    raise ValueError(f"no energy count in {e!r}")
                acc = self._energy.setdefault(d.uuid, Accumulator())
                r.energy_mj = int(acc.extend(raw, now, res, d.power_limit_w) * res / 1000.0)
            except Error as e:
                if _code(e) not in COUNTER_ABSENT:
                    r.error = error_kind(e)
                    return r
                self._no_counter(d, r, error_kind(e))
            except ValueError as e:
                self._no_counter(d, r, "unexpected_data", str(e))
        try:
            watts = _socket_power(lib.amdsmi_get_power_info(h))
            if watts is None:
                if r.energy_mj is None:
                    r.error = "power_not_available"
                    return r
                r.field_errors["power"] = "not_available"
            else:
                r.power_mw = int(round(watts * 1000))
        except Error as e:
            if r.energy_mj is None:
                r.error = error_kind(e)
                return r
            r.field_errors["power"] = error_kind(e)
        if r.energy_mj is not None and r.power_mw is not None:
            self._check_stall(d, r, now)
        try:
            used = (lib.amdsmi_get_gpu_vram_usage(h) or {}).get("vram_used")
            if _is_count(used):
                r.memory_used = used * MIB
            else:  # "N/A": unknown, not 0
                r.field_errors["memory"] = "not_available"
        except Error as e:
            r.field_errors["memory"] = error_kind(e)
        try:
            gfx = self._process_list(h, r)
        except Error as e:
            r.processes.clear()  # residents unknown: the energy goes to the GPU's owner or unallocated
            r.field_errors["processes"] = error_kind(e)
            self._gfx.pop(d.index, None)
            return r
        self._util(d, r, now, gfx)
        return r

    def _process_list(self, h: Any, r: GpuReading) -> dict[int, int]:
        """The GPU's processes into ``r.processes`` (pid -> bytes); their cumulative GFX engine
        ns. An entry without a usable pid is skipped, a pid without GFX engine time kept without
        it (no utilisation sample: a zero would call it idle); either is counted as
        ``processes: unexpected_data``. With the handles of amdsmi before 6.2, a process that
        exited between the list and ``amdsmi_get_gpu_process_info`` (NOT_FOUND) is just gone."""
        lib = self.lib
        gfx: dict[int, int] = {}
        no_gfx: set[int] = set()
        bad = False
        for p in lib.amdsmi_get_gpu_process_list(h) or []:
            if not isinstance(p, dict):  # before amdsmi 6.2: a handle for amdsmi_get_gpu_process_info
                try:
                    p = lib.amdsmi_get_gpu_process_info(h, p)
                except self._errors as e:
                    if _code(e) == STATUS["NOT_FOUND"]:
                        continue
                    raise
            pid = p.get("pid") if isinstance(p, dict) else None
            if not _is_count(pid) or pid == 0:
                bad = True
                continue
            r.processes[pid] = r.processes.get(pid, 0) + _int(p.get("mem"))
            usage = p.get("engine_usage")
            ns = usage.get("gfx") if isinstance(usage, dict) else None
            if _is_count(ns):
                gfx[pid] = gfx.get(pid, 0) + ns
            else:
                no_gfx.add(pid)
        for pid in no_gfx:  # one of its entries lacks the count: its sum would be short
            gfx.pop(pid, None)
        if bad or no_gfx:
            r.field_errors["processes"] = "unexpected_data"
        return gfx

    def _check_stall(self, d: GpuDevice, r: GpuReading, now: float) -> None:
        assert r.energy_mj is not None and r.power_mw is not None
        st = self._stall.get(d.uuid)
        if st is None or r.energy_mj != st.count_mj:  # the counter moves
            self._stall[d.uuid] = Stall(r.energy_mj, now, now, r.power_mw / 1000)
            return
        count = st.update(r.power_mw / 1000, now)
        if count is not None:
            r.energy_mj = count
            del self._stall[d.uuid]
            self._no_counter(d, r, "counter_stuck", f"unchanged for {now - st.since_t:.0f} s at "
                             f"{r.power_mw / 1000:.0f} W; the stalled interval is booked from power")

    def _no_counter(self, d: GpuDevice, r: GpuReading, kind: str, why: str = "") -> None:
        log.warning("AMD GPU %d: no energy counter (%s%s): integrating power from now on",
                    d.index, kind, f": {why}" if why else "")
        d.energy_method = "power_integration"
        r.field_errors["energy"] = kind

    def _util(self, d: GpuDevice, r: GpuReading, now: float, gfx: dict[int, int]) -> None:
        """GFX busy % per pid since this GPU's previous read, from the growth of each process's
        cumulative GFX engine time; a pid seen for the first time (or whose count went back: a
        new process with the same pid) has no sample yet."""
        prev = self._gfx.get(d.index)
        self._gfx[d.index] = (now, gfx)
        r.util_available = True
        if prev is None or now <= prev[0]:
            return
        dt_ns = (now - prev[0]) * 1e9
        for pid, ns in gfx.items():
            before = prev[1].get(pid)
            if before is not None and ns >= before:
                r.sm_util[pid] = 100.0 * (ns - before) / dt_ns

    @property
    def needs_polling(self) -> bool:
        return False  # engine time is cumulative: the read at sample time is enough

    def poll_util(self) -> None:
        pass

    def close(self) -> None:
        if self.status.state == "ok":
            self._try(self.lib.amdsmi_shut_down)

    @property
    def _errors(self) -> type[Exception]:
        """What the binding raises: the base ``AmdSmiException`` (an older or stand-in module
        without it: ``AmdSmiLibraryException``)."""
        lib = self.lib
        return getattr(lib, "AmdSmiException", None) or lib.AmdSmiLibraryException

    def _try(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except self._errors:
            return None


def _count(e: dict) -> int | None:
    """The raw energy count of an ``amdsmi_get_energy_count`` result, whichever version made it."""
    for key in ("energy_accumulator", "power"):
        v = e.get(key)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def _socket_power(info: dict) -> float | None:
    """Socket power in W: the first of the fields this library version and ASIC fill in."""
    for key in ("socket_power", "current_socket_power", "average_socket_power"):
        v = info.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0:
            return float(v)
    return None


def _is_count(v: Any) -> bool:
    """A non-negative int (not a bool, not "N/A", the binding's mark of a field not filled in)."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _int(v: Any) -> int:
    return int(v) if _is_count(v) else 0


def _number(v: Any) -> float | None:
    """A finite number > 0, also from a numeric string ("15.3"); None for "N/A", a dict, anything else."""
    if isinstance(v, bool):
        return None
    try:
        x = float(v) if isinstance(v, (int, float, str)) else None
    except ValueError:
        return None
    return x if x is not None and 0 < x < float("inf") else None


# --- what `check` shows --------------------------------------------------------------------------

def device_files(dev: str | None = None) -> tuple[list[str], bool, bool]:
    """Lines about /dev/kfd and /dev/dri/renderD*; whether one is there but not usable; whether
    /dev/kfd is there at all (an AMD GPU driver on this host)."""
    dev = dev or DEV_DIR
    kfd = os.path.join(dev, "kfd")
    paths = [kfd] + sorted(glob.glob(os.path.join(dev, "dri", "renderD*")))
    lines, denied = [], False
    groups = set(os.getgroups()) | {os.getegid()}
    for path in paths:
        if not os.path.exists(path):
            lines.append(f"{path}: missing (amdgpu not loaded, or the device is not mounted into the container)")
            continue
        if os.access(path, os.R_OK | os.W_OK):
            lines.append(f"{path}: read/write ok")
            continue
        denied = True
        gid = os.stat(path).st_gid
        try:
            group = grp.getgrgid(gid).gr_name
        except KeyError:
            group = str(gid)
        member = "a member" if gid in groups else "not a member"
        lines.append(f"{path}: permission denied (group {group}, gid {gid}; this process is {member})")
    return lines, denied, os.path.exists(kfd)


def describe(meter: AmdGpuMeter | None, name: str, error: str = "", dev: str | None = None) -> Probe:
    """``check``'s view: NVML's layout (state, one read per GPU, with its PCI address), then for
    the real library the device files it needs, and what to do about permissions."""
    from .nvml import describe as nvml_describe

    probe = nvml_describe(meter, name, error, no_library_advice=NO_LIBRARY_ADVICE)
    denied = False
    if name == "amdsmi" and meter is not None:
        files, denied, present = device_files(dev)
        if present or meter.status.state != "no_library":  # no AMD driver and no library: nothing to say
            probe.lines += files
            probe.info["device_files"] = files
    if denied or (meter is not None and "AMDSMI_STATUS_NO_PERM" in meter.status.detail):
        probe.advice.append(PERMISSION_ADVICE)
    return probe


def _probe(cfg: "Config") -> Probe:
    meter = AmdGpuMeter()
    meter.open()
    return describe(meter, "amdsmi")


METER = MeterSpec("amdsmi", "gpu", "AMD Instinct GPUs through AMD SMI (amdsmi): energy counter or power, "
                  "processes, per-process GFX engine time", auto=True,
                  open=lambda cfg: opened(AmdGpuMeter(), cfg, "amdsmi"), probe=_probe, usable=usable)
