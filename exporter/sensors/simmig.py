"""MIG for the simulated NVML (:mod:`exporter.sensors.simnvml`): a GPU's instances and its GPM.

A test double, selected only with ``--gpu.backend=simulated``. It reproduces the NVML calls
Wattprint makes on a MIG GPU with their shapes, units and return codes, read from:

* ``nvml.h`` of NVIDIA/go-nvml (``gen/nvml/nvml.h``, NVML API 13, commit 2f9e261f, July 2026):
  ``nvmlDeviceGetMaxMigDeviceCount`` ("Returns zero if MIG is not supported or enabled"),
  ``nvmlDeviceGetMigDeviceHandleByIndex`` (``NVML_ERROR_NOT_FOUND`` "if no valid MIG device was
  found at index"), ``nvmlDeviceGetGpuInstanceId``/``nvmlDeviceGetComputeInstanceId`` on a MIG
  handle, ``nvmlDeviceGetAttributes_v2`` ("currently only supports MIG device handles":
  NOT_SUPPORTED on a GPU handle), ``nvmlDeviceGetComputeRunningProcesses_v3`` ("In MIG mode, if
  device handle is provided, the API returns aggregate information ... Per-instance information
  can be queried by using specific MIG device handles"), ``nvmlDeviceGetProcessUtilization``
  ("On MIG-enabled GPUs, querying process utilization is not currently supported":
  NOT_SUPPORTED), ``nvmlGpmQueryDeviceSupport`` (``isSupportedDevice``; GPM is "For Hopper or
  newer"), ``nvmlGpmMigSampleGet(device, gpuInstanceId, sample)`` and ``nvmlGpmMetricsGet``
  (two samples, per-metric ``nvmlReturn``). The energy counter and power of the GPU handle are
  the whole GPU's (the header gives no per-instance energy; dcgm-exporter's issue #317 is its
  repeating that whole-GPU figure on every instance).
* ``pynvml.py`` of nvidia-ml-py 13.615.71 (the wrapper the meter calls): the structures
  ``c_nvmlDeviceAttributes`` (gpuInstanceSliceCount, computeInstanceSliceCount, memorySizeMB),
  ``c_nvmlGpuInstanceProfileInfo_v2_t`` (sliceCount), ``c_nvmlGpmMetricsGet_t``,
  ``c_nvmlGpmSupport_t``, and ``c_nvmlGpmSample_t`` (an opaque pointer) — the fake fills the
  wrapper's own ctypes structures, so the meter's code is the code that runs on a real GPU.
* Profile names follow go-nvlib's ``getMigMemorySizeGB`` rounding (NVIDIA/go-nvlib,
  ``pkg/nvlib/device/mig_profile.go`` at 18957773): "3g.40gb", "1c.3g.40gb"; the memory of a profile here is
  97.5 % of its nominal size (an H100 80GB's 1g.10gb reports about 9.75 GiB).

Scenario (one GPU)::

    - name: NVIDIA H100 80GB HBM3
      mig: true
      gpm: true                 # default: true on Hopper and later (H100, H200, B…), else false
      mig_slices: 7             # the 7-slice profile's sliceCount
      mig_instances:
        - {profile: 3g.40gb, gpu_instance: 1, compute_instance: 0, sm_util: 60,
           processes: [{pid: 1001, memory_gib: 20}]}

Power: ``idle_w + (max_w - idle_w) * min(1, Σ sm_util × slices / (100 × mig_slices))``, constant,
so the true energy of any interval, and GPM's SM utilisation of each instance, are known exactly.
A GPU with ``mig: true`` and no ``mig_instances`` is in MIG mode with no instance yet (idle; its
MIG device handles all answer NOT_FOUND).
"""

from __future__ import annotations

import ctypes
import re
import uuid as _uuid
from dataclasses import dataclass, field
from typing import Any

import pynvml
from pynvml import NVMLError

GIB = 1024**3
MIB = 1024**2
_PROFILE = re.compile(r"^(?:(\d)c\.)?(\d)g\.(\d+)gb$")
_PROFILE_IDS = {1: pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE, 2: pynvml.NVML_GPU_INSTANCE_PROFILE_2_SLICE,
                3: pynvml.NVML_GPU_INSTANCE_PROFILE_3_SLICE, 4: pynvml.NVML_GPU_INSTANCE_PROFILE_4_SLICE,
                7: pynvml.NVML_GPU_INSTANCE_PROFILE_7_SLICE}
MAX_MIG_DEVICES = 7  # nvmlDeviceGetMaxMigDeviceCount of an H100 in MIG mode


class MigScenarioError(ValueError):
    pass


@dataclass
class SimInstance:
    """One MIG device: a compute instance of a GPU instance, and its processes."""
    uuid: str
    gpu_instance: int
    compute_instance: int
    gi_slices: int
    ci_slices: int
    memory_mb: int
    sm_util: float                      # % of its SMs busy (GPM SM_UTIL)
    procs: list[Any] = field(default_factory=list)   # simnvml._Proc


@dataclass
class SimMig:
    """A GPU's MIG configuration."""
    slices: int
    gpm: bool
    instances: list[SimInstance]

    def busy_fraction(self) -> float:
        """The GPU's SM-busy fraction: each instance's utilisation weighted by its slices."""
        return min(1.0, sum(i.sm_util / 100.0 * i.ci_slices for i in self.instances) / self.slices)

    def gi_util(self, gi: int) -> float:
        cis = [i for i in self.instances if i.gpu_instance == gi]
        ci_total = sum(i.ci_slices for i in cis)
        return sum(i.sm_util * i.ci_slices for i in cis) / ci_total if ci_total else 0.0


def parse_mig(g: dict, where: str, index: int, procs: Any, num: Any) -> SimMig | None:
    """The ``mig_instances`` of a scenario GPU (``procs``/``num``: simnvml's own parsers)."""
    items = g.get("mig_instances")
    if items is None and not g.get("mig"):
        return None
    if not g.get("mig"):
        raise MigScenarioError(f"{where}.mig_instances: the GPU needs mig: true")
    items = [] if items is None else items  # MIG enabled, no instance created yet
    if not isinstance(items, list):
        raise MigScenarioError(f"{where}.mig_instances: expected a list")
    slices = int(num(g, "mig_slices", 7, where))
    name = str(g.get("name", ""))
    gpm = g.get("gpm", any(k in name for k in ("H100", "H200", "H20", "GH200", "B200", "GB200")))
    out, seen = [], set()
    for j, it in enumerate(items):
        w = f"{where}.mig_instances[{j}]"
        m = _PROFILE.match(str(it.get("profile", "")))
        if not isinstance(it, dict) or m is None:
            raise MigScenarioError(f"{w}.profile: expected a MIG profile such as 3g.40gb or 1c.3g.40gb")
        gi_slices, gb = int(m.group(2)), int(m.group(3))
        ci_slices = int(m.group(1) or gi_slices)
        if gi_slices not in _PROFILE_IDS or ci_slices > gi_slices:
            raise MigScenarioError(f"{w}.profile: {it['profile']!r} is not an H100 profile")
        gi = int(num(it, "gpu_instance", j + 1, w))
        ci = int(num(it, "compute_instance", 0, w))
        if (gi, ci) in seen:
            raise MigScenarioError(f"{w}: GPU instance {gi} already has compute instance {ci}")
        seen.add((gi, ci))
        util = num(it, "sm_util", 0, w)
        if util > 100:
            raise MigScenarioError(f"{w}.sm_util: {util} is above 100 %")
        out.append(SimInstance(f"MIG-{_uuid.uuid5(_uuid.NAMESPACE_OID, f'wattprint-sim-{index}-{gi}-{ci}')}",
                               gi, ci, gi_slices, ci_slices, int(gb * 1024 * 0.975), util,
                               procs(it.get("processes", []), f"{w}.processes")))
    held = sum({i.gpu_instance: i.gi_slices for i in out}.values())
    if held > slices:
        raise MigScenarioError(f"{where}.mig_instances: {held} slices held, the GPU has {slices}")
    return SimMig(slices, bool(gpm), out)


@dataclass
class MigHandle:
    """A MIG device handle of one NVML session."""
    gpu: Any
    session_s: float
    inst: SimInstance


class MigCalls:
    """The MIG part of the pynvml surface, mixed into ``SimulatedNVML`` (which provides ``_gpu``,
    returning the GPU of a handle and the elapsed time, and raising its faults)."""

    def _mig_of(self, handle: Any, call: str) -> tuple[Any, SimMig, float]:
        gpu, t = self._gpu(handle, call)  # type: ignore[attr-defined]
        if isinstance(handle, MigHandle) or gpu.mig_state is None:
            raise NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT if isinstance(handle, MigHandle)
                            else pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu, gpu.mig_state, t

    def _inst(self, handle: Any, call: str, not_mig: int = pynvml.NVML_ERROR_INVALID_ARGUMENT) -> SimInstance:
        self._gpu(handle, call)  # type: ignore[attr-defined]
        if not isinstance(handle, MigHandle):
            raise NVMLError(not_mig)
        return handle.inst

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any) -> int:
        gpu, _ = self._gpu(handle, "nvmlDeviceGetMaxMigDeviceCount")  # type: ignore[attr-defined]
        return MAX_MIG_DEVICES if gpu.mig and not isinstance(handle, MigHandle) else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, index: int) -> MigHandle:
        gpu, mig, _ = self._mig_of(handle, "nvmlDeviceGetMigDeviceHandleByIndex")
        if not 0 <= index < MAX_MIG_DEVICES:
            raise NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if index >= len(mig.instances):
            raise NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return MigHandle(gpu, handle.session_s, mig.instances[index])

    def nvmlDeviceIsMigDeviceHandle(self, handle: Any) -> int:
        self._gpu(handle, "nvmlDeviceIsMigDeviceHandle")  # type: ignore[attr-defined]
        return int(isinstance(handle, MigHandle))

    def nvmlDeviceGetGpuInstanceId(self, handle: Any) -> int:
        return self._inst(handle, "nvmlDeviceGetGpuInstanceId").gpu_instance

    def nvmlDeviceGetComputeInstanceId(self, handle: Any) -> int:
        return self._inst(handle, "nvmlDeviceGetComputeInstanceId").compute_instance

    def nvmlDeviceGetAttributes(self, handle: Any) -> Any:
        inst = self._inst(handle, "nvmlDeviceGetAttributes_v2", pynvml.NVML_ERROR_NOT_SUPPORTED)
        a = pynvml.c_nvmlDeviceAttributes()
        a.gpuInstanceSliceCount, a.computeInstanceSliceCount = inst.gi_slices, inst.ci_slices
        a.multiprocessorCount = 16 * inst.ci_slices  # an H100 SXM: 132 SMs, 16 a slice under MIG
        a.memorySizeMB = inst.memory_mb
        return a

    def nvmlDeviceGetGpuInstanceProfileInfo(self, handle: Any, profile: int, version: int = 2) -> Any:
        _gpu, mig, _ = self._mig_of(handle, "nvmlDeviceGetGpuInstanceProfileInfoV")
        slices = {v: k for k, v in _PROFILE_IDS.items()}.get(profile)
        if slices is None or slices > mig.slices:
            raise NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        info = pynvml.c_nvmlGpuInstanceProfileInfo_v2_t()
        info.id, info.sliceCount = profile, slices
        info.instanceCount = mig.slices // slices
        return info

    # --- GPM -------------------------------------------------------------------------------
    def nvmlGpmQueryDeviceSupport(self, handle: Any) -> Any:
        gpu, _ = self._gpu(handle, "nvmlGpmQueryDeviceSupport")  # type: ignore[attr-defined]
        s = pynvml.c_nvmlGpmSupport_t()
        s.version = pynvml.NVML_GPM_SUPPORT_VERSION
        s.isSupportedDevice = int(gpu.mig_state is not None and gpu.mig_state.gpm)
        return s

    def nvmlGpmSampleAlloc(self) -> Any:
        buf = ctypes.create_string_buffer(16)
        self.gpm_buffers[ctypes.addressof(buf)] = buf  # type: ignore[attr-defined]
        return ctypes.cast(buf, pynvml.c_nvmlGpmSample_t)

    def nvmlGpmSampleFree(self, sample: Any) -> None:
        if self.gpm_buffers.pop(_address(sample), None) is None:  # type: ignore[attr-defined]
            raise NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    def nvmlGpmMigSampleGet(self, handle: Any, gpuInstanceId: int, sample: Any) -> Any:
        gpu, mig, t = self._mig_of(handle, "nvmlGpmMigSampleGet")
        if not mig.gpm:
            raise NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if _address(sample) not in self.gpm_buffers:  # type: ignore[attr-defined]
            raise NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if all(i.gpu_instance != gpuInstanceId for i in mig.instances):
            raise NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        self.gpm_samples[_address(sample)] = (gpu, int(gpuInstanceId), t)  # type: ignore[attr-defined]
        return sample

    def nvmlGpmMetricsGet(self, metricsGet: Any) -> Any:
        if metricsGet.version != pynvml.NVML_GPM_METRICS_GET_VERSION:
            raise NVMLError(pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
        a = self.gpm_samples.get(_address(metricsGet.sample1))  # type: ignore[attr-defined]
        b = self.gpm_samples.get(_address(metricsGet.sample2))  # type: ignore[attr-defined]
        if a is None or b is None or a[:2] != b[:2] or not b[2] > a[2]:
            raise NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        util = a[0].mig_state.gi_util(a[1])  # constant: the mean over the two samples is the value
        for k in range(metricsGet.numMetrics):
            m = metricsGet.metrics[k]
            if m.metricId in (pynvml.NVML_GPM_METRIC_SM_UTIL, pynvml.NVML_GPM_METRIC_SM_OCCUPANCY):
                m.value, m.nvmlReturn = util, pynvml.NVML_SUCCESS
            else:
                m.value, m.nvmlReturn = 0.0, pynvml.NVML_ERROR_NOT_SUPPORTED
        return metricsGet


def _address(sample: Any) -> int:
    return ctypes.cast(sample, ctypes.c_void_p).value or 0


def mig_memory_used(inst: SimInstance) -> int:
    return min(inst.memory_mb * MIB, 200 * MIB + sum(p.memory_bytes for p in inst.procs))
