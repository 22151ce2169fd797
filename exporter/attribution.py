"""Attribution: split each device's measured energy delta among workloads.

Pure functions of their inputs: no I/O, no clock, no imports from the rest of the package.
Called once per sample interval with the energy deltas read by the sensors and the per-workload
activity of the same interval; returns one :class:`Share` per (workload, device, component, mode).

Conservation is the product: for every device, the joules of its shares sum (``math.fsum``) to the
measured delta within floating-point rounding (a few ulps; the largest share of each split absorbs
the residual). Every joule lands in exactly one row.

Keys are any hashable (the caller uses a frozen ``Workload`` dataclass). Two special keys,
:data:`UNALLOCATED` and :data:`SYSTEM`, are instances of :class:`SpecialKey` and never compare equal
to a caller's key.

GPU, per interval::

    idle   = min(E, P_idle * dt)          active = E - idle
    active -> residents by SM-utilisation share (equal when no utilisation was seen)
    idle   -> residents by the GPU idle policy (IDLE_POLICIES_GPU)
    no resident -> both parts to UNALLOCATED, keeping the mode

A GPU in MIG mode (``GpuInterval.mig``: its instances) is split in two steps (:func:`mig_split`)::

    idle   -> instances by the slices each reserves; slices in no instance -> UNALLOCATED
    active -> instances by GPM SM utilisation x slices (method "gpm", every instance measured),
              else by slices among the instances with residents (method "slice_share"),
              else like the idle part
    within an instance -> its residents by the GPU rules above; an instance without
              residents -> its owner (the pod it is allocated to), else UNALLOCATED

CPU, per component (``cpu``, ``dram``, ...)::

    active = E * busy_ratio               idle = E - active
    active -> workload k gets cpu_seconds[k] / max(node_busy_seconds, sum(cpu_seconds)),
              the remainder (kernel, exited processes, unknown) goes to SYSTEM
    idle   -> by the CPU idle policy (IDLE_POLICIES_CPU)
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "ACTIVE",
    "CPU_DEVICE",
    "CpuInterval",
    "GPU_COMPONENT",
    "GPU_IDLE_POLICY_DOCS",
    "CPU_IDLE_POLICY_DOCS",
    "GpuInterval",
    "MIG_METHODS",
    "MigInstance",
    "IDLE",
    "IDLE_POLICIES_CPU",
    "IDLE_POLICIES_GPU",
    "SYSTEM",
    "Share",
    "SpecialKey",
    "UNALLOCATED",
    "device_totals",
    "mig_split",
    "gpu_joules_by_key",
    "split_cpu",
    "split_gpu",
    "split_interval",
]


@dataclass(frozen=True, slots=True)
class SpecialKey:
    """A key that is not a workload. Compares equal only to another SpecialKey of the same name."""

    name: str

    def __repr__(self) -> str:
        return f"<{self.name}>"


UNALLOCATED = SpecialKey("unallocated")
"""GPU energy of an interval in which the GPU had no resident workload."""
SYSTEM = SpecialKey("system")
"""CPU/DRAM energy not attributable to a workload (kernel, exited or unknown processes, idle)."""

ACTIVE = "active"
IDLE = "idle"
GPU_COMPONENT = "gpu"
CPU_DEVICE = "cpu"
"""Device name of the node's CPU/DRAM rows; the component tells cpu from dram."""

GPU_IDLE_POLICY_DOCS: Mapping[str, str] = {
    "memory": "Idle GPU energy goes to the resident workloads in proportion to the GPU memory "
    "they hold (equal shares when none is known): a reserved GPU belongs to who reserved it.",
    "equal": "Idle GPU energy goes to the resident workloads in equal shares, whatever memory "
    "they hold.",
}
CPU_IDLE_POLICY_DOCS: Mapping[str, str] = {
    "system": "Idle CPU/DRAM energy (the node's not-busy fraction) goes to SYSTEM: the host would "
    "draw it without the workloads.",
    "gpu_share": "Idle CPU/DRAM energy goes to the workloads in proportion to their GPU energy in "
    "the same interval (the host exists to feed the GPUs); to SYSTEM when no workload used a GPU.",
}
IDLE_POLICIES_GPU: tuple[str, ...] = tuple(GPU_IDLE_POLICY_DOCS)
IDLE_POLICIES_CPU: tuple[str, ...] = tuple(CPU_IDLE_POLICY_DOCS)


class Share(NamedTuple):
    """One output row: ``joules`` of ``device``'s ``component`` energy in ``mode``, owed by ``key``.

    A NamedTuple rather than a frozen dataclass: thousands are built per second and tuple
    construction is several times cheaper; it is just as immutable and hashable.
    """

    key: Hashable
    device: str  # "gpu0", ..., or CPU_DEVICE
    component: str  # "gpu" | "cpu" | "dram"
    mode: str  # ACTIVE | IDLE
    joules: float


MIG_METHODS: Mapping[str, str] = {
    "gpm": "active energy by each instance's GPM SM utilisation (nvmlGpmMigSampleGet, Hopper and "
    "later) times the slices it holds",
    "slice_share": "active energy by slices among the instances with resident processes (no GPM "
    "utilisation for every instance); by all reserved slices when none has one",
}


@dataclass(frozen=True)
class MigInstance:
    """One MIG instance (a compute instance of a GPU instance) over one sample interval.

    ``slices`` is the part of the GPU's slices it reserves (a GPU instance's slice count, shared
    by its compute instances). ``activity`` is its GPM SM utilisation in percent, None when not
    measured. ``owner`` is the key the instance is allocated to (a pod through the kubelet's
    pod-resources), which takes its energy when it has no resident.
    """

    instance: Hashable
    slices: float
    memory_bytes: Mapping[Hashable, float]
    sm_util: Mapping[Hashable, float] = field(default_factory=dict)
    activity: float | None = None
    owner: Hashable | None = None


@dataclass(frozen=True)
class GpuInterval:
    """One GPU over one sample interval.

    ``memory_bytes`` lists the residents (workload -> bytes held; 0 when unknown). A key present only
    in ``sm_util`` is a resident too. ``sm_util`` values are summed SM-utilisation samples of any
    unit; only their ratios matter.

    In MIG mode ``mig`` lists the instances and ``mig_slices`` the GPU's slices (7 on an H100);
    the split then follows the instances, and ``memory_bytes``/``sm_util`` only list the
    residents for callers that want the set.
    """

    device: str
    energy_j: float
    dt_s: float
    idle_power_w: float
    memory_bytes: Mapping[Hashable, float]
    sm_util: Mapping[Hashable, float]
    mig: Sequence[MigInstance] = ()
    mig_slices: float = 0.0


@dataclass(frozen=True)
class CpuInterval:
    """The node's CPU meters over one sample interval.

    ``energy_j`` maps component -> delta; components must not overlap (never package and psys).
    ``node_busy_seconds`` may be smaller than the sum of ``cpu_seconds`` (sampling skew): the
    larger of the two is the denominator.
    """

    energy_j: Mapping[str, float]
    busy_ratio: float
    cpu_seconds: Mapping[Hashable, float]
    node_busy_seconds: float


# --------------------------------------------------------------------------------------------
# validation


def _bad(field: str, value: object, want: str) -> ValueError:
    return ValueError(f"{field} must be {want}, got {value!r}")


_INF = math.inf


def _check_nonneg(field: str, value: float) -> None:
    if not (0 <= value < _INF):  # also false for NaN
        raise _bad(field, value, "a finite number >= 0")


def _check_mapping(field: str, values: Mapping[Hashable, float]) -> None:
    for k, v in values.items():
        if not (0 <= v < _INF):
            raise _bad(f"{field}[{k!r}]", v, "a finite number >= 0")


def _check_policy(field: str, policy: str, allowed: tuple[str, ...]) -> None:
    if policy not in allowed:
        raise ValueError(f"{field} must be one of {allowed}, got {policy!r}")


# --------------------------------------------------------------------------------------------
# the one arithmetic primitive


def _apportion(total: float, keys: list, weights: list[float]) -> list[float]:
    """Split ``total`` over ``keys`` in proportion to ``weights`` (non-negative, finite).

    Equal shares when every weight is 0. The largest part absorbs the rounding residual, so
    ``fsum(parts) == total`` to within an ulp of the largest part and no part goes negative.
    """
    n = len(keys)
    if n == 1:
        return [total]
    wmax = max(weights)
    if wmax > 0:
        # normalise by the max first: no overflow in the sum, whatever the magnitudes
        norm = [w / wmax for w in weights]
        s = math.fsum(norm)
        parts = [total * (w / s) for w in norm]
    else:
        parts = [total / n] * n
    residual = total - math.fsum(parts)
    if residual:
        i = max(range(n), key=parts.__getitem__)
        parts[i] = max(0.0, parts[i] + residual)
    return parts


_new_tuple = tuple.__new__


def _emit(out: list[Share], keys: list, parts: list[float], device: str, component: str,
          mode: str) -> None:
    add = out.append
    for k, j in zip(keys, parts):
        if j:
            add(_new_tuple(Share, (k, device, component, mode, j)))


# --------------------------------------------------------------------------------------------
# GPU


def split_gpu(iv: GpuInterval, idle_policy: str = "memory") -> list[Share]:
    """Split one GPU's energy delta among its residents (see the module docstring)."""
    dev = iv.device
    _check_policy("gpu idle_policy", idle_policy, IDLE_POLICIES_GPU)
    _check_nonneg(f"GpuInterval({dev!r}).energy_j", iv.energy_j)
    if not (0 < iv.dt_s < _INF):
        raise _bad(f"GpuInterval({dev!r}).dt_s", iv.dt_s, "a finite number > 0")
    _check_nonneg(f"GpuInterval({dev!r}).idle_power_w", iv.idle_power_w)
    mem, util = iv.memory_bytes, iv.sm_util
    _check_mapping(f"GpuInterval({dev!r}).memory_bytes", mem)
    _check_mapping(f"GpuInterval({dev!r}).sm_util", util)

    energy = float(iv.energy_j)
    idle_j = min(energy, iv.idle_power_w * iv.dt_s)
    active_j = energy - idle_j
    out: list[Share] = []
    if iv.mig:
        parts, _method = mig_split(iv)
        for inst, (idle_i, active_i) in zip(iv.mig, parts):
            empty = inst.owner if inst.owner is not None else UNALLOCATED
            _split_residents(out, dev, active_i, idle_i, inst.memory_bytes, inst.sm_util, idle_policy, empty)
        _split_residents(out, dev, parts[-1][1], parts[-1][0], {}, {}, idle_policy, UNALLOCATED)
        return out
    _split_residents(out, dev, active_j, idle_j, mem, util, idle_policy, UNALLOCATED)
    return out


def _split_residents(out: list[Share], dev: str, active_j: float, idle_j: float,
                     mem: Mapping[Hashable, float], util: Mapping[Hashable, float], idle_policy: str,
                     empty: Hashable) -> None:
    """Active by SM-utilisation share, idle by the idle policy; no resident: both to ``empty``."""
    residents = list(mem)
    residents.extend(k for k in util if k not in mem)
    if not residents:
        if active_j:
            out.append(Share(empty, dev, GPU_COMPONENT, ACTIVE, active_j))
        if idle_j:
            out.append(Share(empty, dev, GPU_COMPONENT, IDLE, idle_j))
        return
    if active_j:
        w = [util.get(k, 0.0) for k in residents]
        _emit(out, residents, _apportion(active_j, residents, w), dev, GPU_COMPONENT, ACTIVE)
    if idle_j:
        if idle_policy == "memory":
            w = [mem.get(k, 0.0) for k in residents]
        else:  # "equal"
            w = [0.0] * len(residents)
        _emit(out, residents, _apportion(idle_j, residents, w), dev, GPU_COMPONENT, IDLE)


def mig_split(iv: GpuInterval) -> tuple[list[tuple[float, float]], str]:
    """A MIG GPU's (idle, active) joules per instance, in ``iv.mig``'s order, then the part of the
    slices no instance holds; and the method of the active part (a key of :data:`MIG_METHODS`).

    Exact: the idle parts sum to the interval's idle joules, the active parts to its active
    joules (``_apportion``). Raises ValueError on slices that are not positive or that add up
    to more than the GPU has."""
    dev = iv.device
    insts = list(iv.mig)
    total = iv.mig_slices
    for i, inst in enumerate(insts):
        where = f"GpuInterval({dev!r}).mig[{i}]"
        if not (0 < inst.slices < _INF):
            raise _bad(f"{where}.slices", inst.slices, "a finite number > 0")
        if inst.activity is not None:
            _check_nonneg(f"{where}.activity", inst.activity)
        _check_mapping(f"{where}.memory_bytes", inst.memory_bytes)
        _check_mapping(f"{where}.sm_util", inst.sm_util)
    held = math.fsum(inst.slices for inst in insts)
    if not (0 < total < _INF) or held > total * (1 + 1e-9):
        raise _bad(f"GpuInterval({dev!r}).mig_slices", total,
                   f"a finite number >= the {held:g} slices its instances hold")
    energy = float(iv.energy_j)
    idle_j = min(energy, iv.idle_power_w * iv.dt_s)
    active_j = energy - idle_j
    keys = list(range(len(insts) + 1))  # the instances, then the free slices
    slice_w = [inst.slices for inst in insts] + [max(0.0, total - held)]
    idle = _apportion(idle_j, keys, slice_w) if idle_j else [0.0] * len(keys)
    method = "gpm" if all(inst.activity is not None for inst in insts) else "slice_share"
    w = [inst.slices * inst.activity for inst in insts] + [0.0] if method == "gpm" else []
    if not w or not max(w):
        method = "slice_share"
        w = [inst.slices if (inst.memory_bytes or inst.sm_util) else 0.0 for inst in insts] + [0.0]
    if not max(w):
        w = slice_w  # no instance is known to work: the active part follows the reserved slices
    active = _apportion(active_j, keys, w) if active_j else [0.0] * len(keys)
    return list(zip(idle, active)), method


# --------------------------------------------------------------------------------------------
# CPU


def split_cpu(iv: CpuInterval, idle_policy: str = "system",
              gpu_weights: Mapping[Hashable, float] | None = None) -> list[Share]:
    """Split the node's CPU/DRAM energy deltas by CPU time (see the module docstring).

    ``gpu_weights`` (workload -> its GPU joules this interval) is used only by the ``gpu_share``
    idle policy; UNALLOCATED and SYSTEM entries in it are ignored.
    """
    _check_policy("cpu idle_policy", idle_policy, IDLE_POLICIES_CPU)
    for comp, e in iv.energy_j.items():
        _check_nonneg(f"CpuInterval.energy_j[{comp!r}]", e)
    busy = iv.busy_ratio
    if not (0.0 <= busy <= 1.0):
        raise _bad("CpuInterval.busy_ratio", busy, "a number in [0, 1]")
    _check_nonneg("CpuInterval.node_busy_seconds", iv.node_busy_seconds)
    _check_mapping("CpuInterval.cpu_seconds", iv.cpu_seconds)

    # active: workloads by CPU time, remainder of the node's busy time to SYSTEM
    act_keys = [k for k, s in iv.cpu_seconds.items() if s > 0]
    act_w = [iv.cpu_seconds[k] for k in act_keys]
    rest = iv.node_busy_seconds - math.fsum(act_w)
    if rest > 0 or not act_keys:  # alone, SYSTEM takes everything whatever its weight
        act_keys.append(SYSTEM)
        act_w.append(max(rest, 0.0))

    # idle: SYSTEM, or workloads by GPU energy
    idle_keys: list = [SYSTEM]
    idle_w = [1.0]
    if idle_policy == "gpu_share" and gpu_weights:
        _check_mapping("gpu_weights", gpu_weights)
        ks = [k for k, w in gpu_weights.items() if w > 0 and not isinstance(k, SpecialKey)]
        if ks:
            idle_keys, idle_w = ks, [gpu_weights[k] for k in ks]

    out: list[Share] = []
    for comp, e in iv.energy_j.items():
        e = float(e)
        active = e * busy
        idle = e - active
        if active:
            _emit(out, act_keys, _apportion(active, act_keys, act_w), CPU_DEVICE, comp, ACTIVE)
        if idle:
            _emit(out, idle_keys, _apportion(idle, idle_keys, idle_w), CPU_DEVICE, comp, IDLE)
    return out


# --------------------------------------------------------------------------------------------
# one interval, all devices


def gpu_joules_by_key(shares: Sequence[Share]) -> dict[Hashable, float]:
    """Each workload's GPU joules in ``shares``, special keys excluded: the ``gpu_share`` weights.

    A plain sum (these are weights, only their ratios matter).
    """
    acc: dict[Hashable, float] = {}
    get = acc.get
    for key, _dev, comp, _mode, j in shares:
        if comp == GPU_COMPONENT:
            acc[key] = get(key, 0.0) + j
    acc.pop(UNALLOCATED, None)
    acc.pop(SYSTEM, None)
    return acc


def split_interval(gpus: Sequence[GpuInterval], cpu: CpuInterval | None,
                   gpu_idle_policy: str = "memory", cpu_idle_policy: str = "system") -> list[Share]:
    """All devices of one sample interval: the GPUs, then the CPU weighted by their GPU shares."""
    seen: set[str] = set()
    out: list[Share] = []
    for g in gpus:
        if g.device in seen or g.device == CPU_DEVICE:
            raise ValueError(f"GpuInterval.device must be unique and not {CPU_DEVICE!r}, "
                             f"got {g.device!r}")
        seen.add(g.device)
        out.extend(split_gpu(g, gpu_idle_policy))
    if cpu is not None:
        weights = gpu_joules_by_key(out) if cpu_idle_policy == "gpu_share" else None
        out.extend(split_cpu(cpu, cpu_idle_policy, weights))
    else:
        _check_policy("cpu idle_policy", cpu_idle_policy, IDLE_POLICIES_CPU)
    return out


def device_totals(shares: Sequence[Share]) -> dict[str, float]:
    """Σ joules per device (``math.fsum``): what conservation checks compare with the meters."""
    acc: dict[str, list[float]] = {}
    for s in shares:
        acc.setdefault(s.device, []).append(s.joules)
    return {d: math.fsum(v) for d, v in acc.items()}
