"""A simulated ``amdsmi`` module: a test double at the AMD SMI boundary, selected only by
``--gpu.backend=simulated-amd``, so that :mod:`exporter.sensors.amdgpu` runs its real code
against it.

It has the functions, dict keys, units and exceptions of the real Python binding, read from
ROCm/amdsmi ``py-interface/amdsmi_interface.py`` and ``amdsmi_exception.py`` (amd_smi_lib 24.7.0,
ROCm 6.3, commit 0ceca28) and ROCm/rocm-systems ``projects/amdsmi`` (commit 019df16, ROCm 7):

* ``amdsmi_get_energy_count`` → ``{"power", "energy_accumulator", "counter_resolution",
  "timestamp"}`` (24.7; ``energy_key: energy_accumulator`` gives ROCm 7's dict without
  ``power``, ``energy_key: power`` ROCm 6.0's without ``energy_accumulator``): a count of
  ``counter_resolution`` µJ (the C float 15.3, ``rocm_smi.cc``), 64 bits, or 32 with
  ``energy_counter_bits: 32`` (it wraps);
* ``amdsmi_get_power_info`` → socket power in whole W, ``"N/A"`` for the fields the ASIC lacks
  (``socket_power: current`` = MI300: ``current_socket_power``; ``average`` = MI200;
  ``socket_power`` = ROCm 7's unified field too; ``none``);
* ``amdsmi_get_gpu_vram_usage`` in MiB, ``amdsmi_get_power_cap_info`` in µW,
  ``amdsmi_get_gpu_process_list`` as 24.7's dicts (``mem`` bytes, ``engine_usage.gfx``
  cumulative ns of GFX engine time: a process at ``sm_util`` % accrues that share of wall time);
* errors as ``AmdSmiLibraryException(code)`` with ``amdsmi_status_t`` codes (``amdsmi.h``), as
  ``_check_res`` raises them: RETRY as ``AmdSmiRetryException``, TIMEOUT as
  ``AmdSmiTimeoutException`` (both subclasses of it); and ``AmdSmiParameterException``, which
  derives from the base ``AmdSmiException`` only (no status code), for a handle that is not an
  ``amdsmi_processor_handle`` (``amdsmi_interface.py``'s isinstance checks) or a fault
  ``error: PARAMETER``.

Power follows the scenario exactly as :mod:`exporter.sensors.simnvml`'s (the same YAML, parsed
by its parser; see there), so the true energy of any interval is known. AMD-only keys::

    library: present     # missing (import fails: ImportError), no_shared_library (the package
                         # without libamd_smi.so: the wrapper's KeyError), driver_not_loaded
                         # (amdsmi_init: DRIVER_NOT_LOADED), no_permission (amdsmi_init: NO_PERM,
                         # as rocm_smi maps EACCES on /dev/kfd)
    gpus:
      - name: AMD Instinct MI300X   # market_name
        bdf: "0000:05:00.0"
        energy_counter_bits: 64      # or 32
        energy_stuck_after_s: 30     # the count stops advancing (ROCm/amdsmi#22, #38)
        energy_key: both             # energy_accumulator | power
        socket_power: current        # average | socket_power | none
        process_api: dicts           # handles: amdsmi before 6.2 (+ amdsmi_get_gpu_process_info)
        faults: [{call: processes, error: NO_PERM}]   # energy, power, memory, processes, name,
                                                      # uuid, bdf, handle; AMDSMI_STATUS_* names
                                                      # (RETRY, TIMEOUT: their subclasses), or
                                                      # PARAMETER (AmdSmiParameterException)
    driver_reloads: [{at_s: 60, down_s: 5, stale_error: NOT_INIT}]

During a reload every call raises DRIVER_NOT_LOADED; afterwards the counters restart from 0 and
the old session's handles raise ``stale_error`` until ``amdsmi_init`` is called again. How the
real library behaves across an amdgpu reload is not documented upstream: this is a modelled
failure, not a recorded one.
"""

from __future__ import annotations

import ctypes
import struct
import uuid as _uuid
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from .amdgpu import STATUS
from .simnvml import (GIB, ScenarioError, SessionHandle, SimulatedGpu, SimulatedLibrary, load_simulation,
                      not_selected, parse_reloads, parse_scenario)

NA = "N/A"
RESOLUTION_UJ = struct.unpack("f", struct.pack("f", 15.3))[0]  # kEnergyCounterResolution as a C float
MIB = 1024**2
_CALLS = {name: f"amdsmi_{name}" for name in
          ("energy", "power", "memory", "processes", "name", "uuid", "bdf", "handle")}
LIBRARIES = ("present", "missing", "no_shared_library", "driver_not_loaded", "no_permission")
_INIT_ERRORS = {"driver_not_loaded": "DRIVER_NOT_LOADED", "no_permission": "NO_PERM"}
_ERR_INFO = {"NOT_SUPPORTED": "Feature not supported", "NO_PERM": "Permission Denied",
             "NOT_INIT": "Device not initialized", "DRIVER_NOT_LOADED": "Driver not loaded",
             "FILE_ERROR": "Error opening file", "BUSY": "Device busy", "IO": "I/O Error"}


class AmdSmiException(Exception):
    """Base smi exception class (amdsmi_exception.py)."""


class AmdSmiLibraryException(AmdSmiException):
    """amdsmi_exception.py's: the library's status code, ``get_error_code()``, ``get_error_info()``."""

    def __init__(self, err_code: int) -> None:
        err_code = abs(err_code)
        super().__init__(err_code)
        self.err_code = err_code
        name = next((n for n, c in STATUS.items() if c == err_code), "UNKNOWN_ERROR")
        self.err_info = f"AMDSMI_STATUS_{name} - {_ERR_INFO.get(name, name.replace('_', ' ').title())}"

    def __str__(self) -> str:
        return f"Error code:\n\t{self.err_code} | {self.err_info}"

    def get_error_info(self) -> str:
        return self.err_info

    def get_error_code(self) -> int:
        return self.err_code


class AmdSmiRetryException(AmdSmiLibraryException):
    """amdsmi_exception.py's: ``_check_res`` raises it for AMDSMI_STATUS_RETRY."""

    def __init__(self) -> None:
        super().__init__(STATUS["RETRY"])


class AmdSmiTimeoutException(AmdSmiLibraryException):
    """amdsmi_exception.py's: ``_check_res`` raises it for AMDSMI_STATUS_TIMEOUT."""

    def __init__(self) -> None:
        super().__init__(STATUS["TIMEOUT"])


class AmdSmiParameterException(AmdSmiException):
    """amdsmi_exception.py's: a wrong argument type, no status code (not a library exception)."""

    def __init__(self, receivedValue: Any, expectedType: Any, msg: str | None = None) -> None:
        super().__init__(msg)
        self.actualType, self.expectedType = type(receivedValue), expectedType
        self.err_msg = msg or f"Invalid parameter:\nActual type: {self.actualType}\nExpected type: {expectedType}"

    def __str__(self) -> str:
        return self.err_msg


PARAMETER = -1  # a scenario's ``error: PARAMETER``: AmdSmiParameterException, not a status code


def _exception(code: int, arg: Any = None) -> AmdSmiException:
    """The exception the real binding raises for ``code`` (``_check_res``)."""
    if code == PARAMETER:
        return AmdSmiParameterException(arg, "amdsmi_processor_handle")
    if code == STATUS["RETRY"]:
        return AmdSmiRetryException()
    if code == STATUS["TIMEOUT"]:
        return AmdSmiTimeoutException()
    return AmdSmiLibraryException(code)


class AmdSmiInitFlags(IntEnum):  # amdsmi_init_flags_t (amdsmi_wrapper.py)
    INIT_ALL_PROCESSORS = 0xFFFFFFFF
    INIT_AMD_CPUS = 1
    INIT_AMD_GPUS = 2
    INIT_AMD_APUS = 3
    INIT_NON_AMD_CPUS = 4
    INIT_NON_AMD_GPUS = 8


def _error_code(name: str, where: str) -> int:
    if str(name).upper() == "PARAMETER":
        return PARAMETER
    code = STATUS.get(str(name).upper().removeprefix("AMDSMI_STATUS_"))
    if code is None or code == 0:
        raise ScenarioError(f"{where}.error: unknown amdsmi status {name!r} (e.g. NO_PERM, NOT_SUPPORTED, NOT_INIT)")
    return code


@dataclass
class _Amd:
    """The AMD-only facts of one simulated GPU."""
    bdf: str
    bits: int
    energy_key: str
    socket_power: str
    stuck_after_s: float = float("inf")   # the count stops advancing (gpu_metrics no longer refreshed)
    process_handles: bool = False         # amdsmi before 6.2: process handles + amdsmi_get_gpu_process_info


def _amd(g: dict, i: int) -> _Amd:
    where = f"gpus[{i}]"
    bits = g.get("energy_counter_bits", 64)
    if bits not in (32, 64):
        raise ScenarioError(f"{where}.energy_counter_bits: {bits!r} is not 32 or 64")
    key = g.get("energy_key", "both")
    if key not in ("both", "energy_accumulator", "power"):
        raise ScenarioError(f"{where}.energy_key: {key!r} is not both, energy_accumulator or power")
    power = g.get("socket_power", "current")
    if power not in ("current", "average", "socket_power", "none"):
        raise ScenarioError(f"{where}.socket_power: {power!r} is not current, average, socket_power or none")
    stuck = g.get("energy_stuck_after_s", float("inf"))
    if not isinstance(stuck, (int, float)) or isinstance(stuck, bool) or stuck < 0:
        raise ScenarioError(f"{where}.energy_stuck_after_s: expected a non-negative number, got {stuck!r}")
    api = g.get("process_api", "dicts")
    if api not in ("dicts", "handles"):
        raise ScenarioError(f"{where}.process_api: {api!r} is not dicts or handles")
    return _Amd(str(g.get("bdf") or f"0000:{0x05 + 0x20 * i:02x}:00.0").lower(), bits, key, power, float(stuck),
                api == "handles")


@dataclass
class SimulatedAmdSmi(SimulatedLibrary):
    """Duck-typed stand-in for the ``amdsmi`` module."""

    _amd: list[_Amd] = field(default_factory=list, init=False)

    AmdSmiException = AmdSmiException
    AmdSmiLibraryException = AmdSmiLibraryException
    AmdSmiRetryException = AmdSmiRetryException
    AmdSmiTimeoutException = AmdSmiTimeoutException
    AmdSmiParameterException = AmdSmiParameterException
    AmdSmiInitFlags = AmdSmiInitFlags

    def load(self, data: dict) -> None:
        if not isinstance(data, dict):
            raise ScenarioError("scenario: top level must be a mapping")
        gpus = [dict(g) for g in data.get("gpus") or []]
        for i, g in enumerate(gpus):  # AMD defaults: an MI300X (750 W board), an amdsmi-style UUID
            g.setdefault("name", "AMD Instinct MI300X")
            g.setdefault("max_w", 750)
            g.setdefault("idle_w", 140)
            g.setdefault("memory_total_gib", 192)
            g.setdefault("uuid", str(_uuid.uuid5(_uuid.NAMESPACE_OID, f"wattprint-sim-amd-{i}")))
        data = {**data, "gpus": gpus, "driver_version": data.get("driver_version", "6.8.5")}
        self._library, self._driver, self._gpus = parse_scenario(data, _error_code, _CALLS, LIBRARIES)
        self._amd = [_amd(g, i) for i, g in enumerate(gpus)]
        self._reloads = parse_reloads(data, _error_code, "NOT_INIT")
        self.start_timebase(data)

    def import_module(self) -> "SimulatedAmdSmi":
        """What ``import amdsmi`` does: the module, or the real package's failures."""
        if self._library == "missing":
            raise ModuleNotFoundError("No module named 'amdsmi'", name="amdsmi")
        if self._library == "no_shared_library":
            raise KeyError("libamd_smi.so")  # amdsmi_wrapper.py: _libraries['libamd_smi.so'] was never set
        return self

    # --- helpers ---------------------------------------------------------------------------
    def _raise(self, name: str) -> None:
        raise AmdSmiLibraryException(STATUS[name])

    def elapsed(self) -> float:
        if self._t0 is None:
            self._raise("NOT_INIT")
        t = self.clock() - (self._t0 or 0.0)
        if any(r.at_s <= t < r.end_s for r in self._reloads):
            self._raise("DRIVER_NOT_LOADED")
        return t

    def _gpu(self, handle: Any, call: str) -> tuple[SimulatedGpu, _Amd, float]:
        t = self.elapsed()
        if not isinstance(handle, SessionHandle):
            raise AmdSmiParameterException(handle, "amdsmi_processor_handle")
        for r in self._reloads:
            if handle.session_s < r.end_s <= t:
                raise _exception(r.stale_code, handle)
        gpu = handle.gpu
        for f in gpu.faults:
            if f.active(t) and (f.call == "all" or _CALLS[f.call] == call):
                raise _exception(f.code, handle)
        return gpu, self._amd[gpu.index], t

    def _gfx_ns(self, gpu: SimulatedGpu, t: float) -> dict[int, int]:
        """Cumulative GFX engine ns of each process present at ``t``: ``sm_util`` % of the wall
        time it has been present (each phase that lists it, up to ``t``)."""
        out: dict[int, int] = {}
        bounds = [ph.at_s for ph in gpu.phases[1:]] + [float("inf")]
        live = {(p.pid, p.pid_file): pid for pid, p in gpu.procs_at(t)}
        for ph, end in zip(gpu.phases, bounds):
            span = min(t, end) - ph.at_s
            if span <= 0:
                continue
            for p in ph.procs:
                pid = live.get((p.pid, p.pid_file))
                if pid is not None:
                    out[pid] = out.get(pid, 0) + int(p.sm_util / 100.0 * span * 1e9)
        return out

    # --- the amdsmi surface ----------------------------------------------------------------
    def amdsmi_init(self, flag: AmdSmiInitFlags = AmdSmiInitFlags.INIT_AMD_GPUS) -> None:
        if not isinstance(flag, IntEnum):
            raise TypeError(f"amdsmi_init: {flag!r} is not an AmdSmiInitFlags")
        if self._library in _INIT_ERRORS:
            self._raise(_INIT_ERRORS[self._library])
        if self._t0 is None:
            self._t0 = self.clock()
        self._session_s = self.elapsed()

    def amdsmi_shut_down(self) -> None:
        self.elapsed()

    def amdsmi_get_processor_handles(self) -> list[SessionHandle]:
        t = self.elapsed()
        for gpu in self._gpus:
            for f in gpu.faults:
                if f.active(t) and f.call in ("handle", "all"):
                    raise _exception(f.code)
        return [SessionHandle(gpu, self._session_s) for gpu in self._gpus]

    def amdsmi_get_gpu_device_uuid(self, handle: Any) -> str:
        return self._gpu(handle, _CALLS["uuid"])[0].uuid

    def amdsmi_get_gpu_device_bdf(self, handle: Any) -> str:
        return self._gpu(handle, _CALLS["bdf"])[1].bdf

    def amdsmi_get_gpu_bdf_id(self, handle: Any) -> int:
        domain, bus, rest = self._gpu(handle, _CALLS["bdf"])[1].bdf.split(":")
        dev, fn = rest.split(".")
        return (int(domain, 16) << 32) | (int(bus, 16) << 8) | (int(dev, 16) << 3) | int(fn, 16)

    def amdsmi_get_gpu_asic_info(self, handle: Any) -> dict[str, Any]:
        gpu, _, _ = self._gpu(handle, _CALLS["name"])
        return {"market_name": gpu.name, "vendor_id": "0x1002", "vendor_name": "Advanced Micro Devices Inc. [AMD/ATI]",
                "subvendor_id": "0x1002", "device_id": "0x74a1", "rev_id": "0x00",
                "asic_serial": f"0x{0x5F00_0000_0000_0000 + gpu.index:016X}", "oam_id": gpu.index,
                "num_compute_units": 304, "target_graphics_version": "gfx942"}

    def amdsmi_get_gpu_driver_info(self, handle: Any) -> dict[str, str]:
        self._gpu(handle, "amdsmi_driver")
        return {"driver_name": "amdgpu", "driver_version": self._driver, "driver_date": "2015/01/01 00:00"}

    def amdsmi_get_energy_count(self, handle: Any) -> dict[str, Any]:
        gpu, amd, t = self._gpu(handle, _CALLS["energy"])
        if not gpu.energy_counter:
            self._raise("NOT_SUPPORTED")
        t = min(t, amd.stuck_after_s)
        since = max([r for r in gpu.resets if r <= t], default=None)
        mj = (0 if since is not None else gpu.base_mj) + gpu.energy_j(since or 0.0, t) * 1000
        count = int(mj * 1000 / RESOLUTION_UJ) % (1 << amd.bits)
        out: dict[str, Any] = {"power": count, "energy_accumulator": count,
                               "counter_resolution": RESOLUTION_UJ, "timestamp": int(t * 1e9)}
        if amd.energy_key != "both":
            del out["power" if amd.energy_key == "energy_accumulator" else "energy_accumulator"]
        return out

    def amdsmi_get_power_info(self, handle: Any) -> dict[str, Any]:
        gpu, amd, t = self._gpu(handle, _CALLS["power"])
        w = int(round(gpu.power_at(t)))
        out: dict[str, Any] = {"current_socket_power": NA, "average_socket_power": NA, "gfx_voltage": NA,
                               "soc_voltage": NA, "mem_voltage": NA, "power_limit": int(gpu.max_w)}
        if amd.socket_power == "socket_power":
            out = {"socket_power": w, **out, "current_socket_power": w}
        elif amd.socket_power == "current":
            out["current_socket_power"] = w
        elif amd.socket_power == "average":
            out["average_socket_power"] = w
        return out

    def amdsmi_get_power_cap_info(self, handle: Any) -> dict[str, int]:
        gpu, _, _ = self._gpu(handle, "amdsmi_power_cap")
        cap = int(gpu.max_w * 1e6)
        return {"power_cap": cap, "default_power_cap": cap, "dpm_cap": 0, "min_power_cap": 0, "max_power_cap": cap}

    def amdsmi_get_gpu_vram_usage(self, handle: Any) -> dict[str, int]:
        gpu, _, t = self._gpu(handle, _CALLS["memory"])
        used = min(gpu.memory_total, 300 * MIB + sum(p.memory_bytes for _, p in gpu.procs_at(t)))
        return {"vram_total": gpu.memory_total // MIB, "vram_used": used // MIB}

    def amdsmi_get_gpu_process_list(self, handle: Any) -> list[Any]:
        """24.7's list of dicts; with ``process_api: handles`` the list of
        ``amdsmi_process_handle_t`` (a ctypes uint32: the pid) of amdsmi before 6.2."""
        gpu, amd, t = self._gpu(handle, _CALLS["processes"])
        gfx = self._gfx_ns(gpu, t)
        if amd.process_handles:
            return [ctypes.c_uint32(pid) for pid, _ in gpu.procs_at(t)]
        return [_proc_info(pid, p.memory_bytes, gfx.get(pid, 0)) for pid, p in gpu.procs_at(t)]

    def amdsmi_get_gpu_process_info(self, handle: Any, process: Any) -> dict[str, Any]:
        gpu, _, t = self._gpu(handle, _CALLS["processes"])
        if not isinstance(process, ctypes.c_uint32):
            raise TypeError(f"amdsmi_get_gpu_process_info: {process!r} is not an amdsmi_process_handle_t")
        for pid, p in gpu.procs_at(t):
            if pid == process.value:
                return _proc_info(pid, p.memory_bytes, self._gfx_ns(gpu, t).get(pid, 0))
        raise AmdSmiLibraryException(STATUS["NOT_FOUND"])


def _proc_info(pid: int, mem: int, gfx_ns: int) -> dict[str, Any]:
    return {"name": f"python{pid}", "pid": pid, "mem": mem, "engine_usage": {"gfx": gfx_ns, "enc": 0},
            "memory_usage": {"gtt_mem": 0, "cpu_mem": 0, "vram_mem": mem}}


# --- registry entry ---------------------------------------------------------------------------

def _meter_of(sim: SimulatedAmdSmi) -> Any:
    from .amdgpu import AmdGpuMeter

    return AmdGpuMeter(sim.import_module, "simulated-amd", lambda: sim.clock())


def _open(cfg: Any) -> Any:
    from .amdgpu import opened

    return opened(_meter_of(load_simulation(cfg, "simulated-amd", SimulatedAmdSmi)), cfg, "simulated-amd")


def _probe(cfg: Any) -> Any:
    from .amdgpu import describe
    from .base import MeterError

    if cfg.gpu.backend != "simulated-amd":
        return not_selected("simulated-amd")
    try:
        meter = _meter_of(load_simulation(cfg, "simulated-amd", SimulatedAmdSmi))
    except MeterError as e:
        return describe(None, "simulated-amd", str(e))
    meter.open()  # a probe reports a failed open (no library, no permission), it does not raise
    return describe(meter, "simulated-amd")


def _meter() -> Any:
    from .amdgpu import usable
    from .base import MeterSpec

    return MeterSpec("simulated-amd", "gpu", "a simulated amdsmi driven by a scenario file (a test double; "
                     "its metrics say backend=\"simulated-amd\")", auto=False, open=_open, probe=_probe,
                     usable=usable)


METER = _meter()

__all__ = ["GIB", "SimulatedAmdSmi", "AmdSmiLibraryException", "AmdSmiParameterException", "AmdSmiRetryException",
           "AmdSmiTimeoutException", "AmdSmiInitFlags", "ScenarioError"]
