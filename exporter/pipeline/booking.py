"""Booking stage: one interval's measured energy → attribution (pure) → identity → the ledger.

A joule's way: ``attribution.split_interval`` cuts each device's delta into shares by key (pid,
UNALLOCATED, SYSTEM); each share's key is resolved to a workload (a GPU allocated to a pod
belongs to it); a workload serving several models is split by the models' activity; the share
is added once to ``endpoint_energy_joules_total`` (and the opt-in pod/process series); the same
per-workload joules feed the carbon stage."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from .. import attribution
from ..attribution import SpecialKey
from ..identity.resolver import SYSTEM, UNALLOCATED, Workload

UNIDENTIFIED = Workload("", "unidentified", "")
MISSING = object()
from .health import Health


@dataclass
class Booked:
    """What one interval booked, for the carbon stage."""
    by_workload: dict[Workload, float] = field(default_factory=dict)
    residency: dict[tuple[str, str], dict[Workload, float]] = field(default_factory=dict)  # (GPU, mode|any)
    gpu_dt: dict[str, float] = field(default_factory=dict)
    active: dict[tuple[str, str, str], float] = field(default_factory=dict)  # (ns, endpoint, model): active J


class Booking:
    def __init__(self, resolver: Any, health: Health, *, gpu_idle_policy: str = "memory",
                 cpu_idle_policy: str = "system", level: str = "endpoint",
                 gpu_owners: Callable[[], dict[str, Workload]] | None = None) -> None:
        self.resolver = resolver
        self.health = health
        self.gpu_idle_policy, self.cpu_idle_policy, self.level = gpu_idle_policy, cpu_idle_policy, level
        self.gpu_owners = gpu_owners or dict   # GPU UUID -> workload that was allocated the GPU

    def book(self, gpu_ivs: list[attribution.GpuInterval], cpu_iv: attribution.CpuInterval | None,
             procs: dict, uuids: dict[str, str],
             weights_for: Callable[[Workload], dict[str, float] | None] | None, ledger: Any) -> Booked:
        on_gpu = {pid for iv in gpu_ivs for pid in (*iv.memory_bytes, *iv.sm_util)}
        owners = self.gpu_owners()
        if owners:  # a MIG instance allocated to a pod belongs to it (its MIG UUID in pod-resources)
            gpu_ivs = [with_mig_owners(iv, owners, procs) if iv.mig else iv for iv in gpu_ivs]
        try:
            shares = attribution.split_interval(gpu_ivs, cpu_iv, gpu_idle_policy=self.gpu_idle_policy,
                                                cpu_idle_policy=self.cpu_idle_policy)
        except ValueError as e:  # bad input from a meter: keep every joule, visibly unattributed
            self.health.fail("attribution", "invalid_input", str(e))
            shares = unattributed(gpu_ivs, cpu_iv)
        out = Booked(gpu_dt={iv.device: iv.dt_s for iv in gpu_ivs})
        resolve = self.resolver.resolve
        resolved: dict[Any, Workload] = {}  # a pid has shares on several devices and modes: resolve once
        wcache: dict[Workload, Any] = {}  # and each workload's model weights once
        fast = self.level == "endpoint"
        by_workload, residency = out.by_workload, out.residency
        endpoint: dict[tuple[str, ...], float] = {}  # one ledger add per label set, not per share
        for s in shares:
            key, device, component, mode, share_j = s  # one unpacking, not five attribute reads
            # a GPU allocated to a pod belongs to it: idle with no process, or processes we cannot see
            owner = owners.get(uuids.get(device, "")) if owners and component == "gpu" else None
            special = key.__class__ is SpecialKey  # a pid never compares equal to one: no __eq__ call
            if special and key == attribution.UNALLOCATED:
                w = owner or UNALLOCATED
            elif special and key == attribution.SYSTEM:
                w = SYSTEM
            elif key.__class__ is Workload:  # a MIG instance's owner, named by with_mig_owners
                w = key
            elif owner is not None and key not in procs:
                w = owner
            else:
                w = resolved.get(key)
                if w is None:
                    w = resolved[key] = self._resolve_one(resolve, key, procs, key in on_gpu)
            if weights_for is not None:
                weights = wcache.get(w, MISSING)
                if weights is MISSING:
                    weights = wcache[w] = weights_for(w)
            else:
                weights = None
            for w, joules in split_models(w, share_j, weights) if weights else ((w, share_j),):
                labels = w[:3] + (component, mode)
                endpoint[labels] = endpoint.get(labels, 0.0) + joules
                if fast:  # the default level: the endpoint series, the carbon stage's inputs
                    by_workload[w] = by_workload.get(w, 0.0) + joules
                    if component == "gpu":
                        for m in (mode, "any"):
                            dev = residency.setdefault((device, m), {})
                            dev[w] = dev.get(w, 0.0) + joules
                else:
                    self._book(s, w, joules, procs, out, ledger)
        active = out.active
        for labels, joules in endpoint.items():
            ledger.add("endpoint_energy_joules_total", labels, joules)
            if labels[4] == "active":
                k = labels[:3]
                active[k] = active.get(k, 0.0) + joules
        self.resolver.forget(procs)
        return out

    def _resolve_one(self, resolve: Callable[..., Workload], key: Any, procs: dict, on_gpu: bool) -> Workload:
        """One process's identity; a bug or bad data there costs that process its identity, not
        the whole sample (which would roll back every sample while the process lives)."""
        try:
            return resolve(key, procs, on_gpu=on_gpu)
        except Exception as e:  # noqa: BLE001 - counted and logged once per kind
            self.health.degraded("attribution", "resolve_" + type(e).__name__.lower(), f"pid {key}: {e}")
            return UNIDENTIFIED if on_gpu else SYSTEM

    def _book(self, s: attribution.Share, w: Workload, joules: float, procs: dict, out: Booked,
              ledger: Any) -> None:
        """Everything but the endpoint series (added once per label set by book())."""
        out.by_workload[w] = out.by_workload.get(w, 0.0) + joules
        if s.component == "gpu":  # who holds each GPU: idle (residency) shares, else any share
            for mode in (s.mode, "any"):
                dev = out.residency.setdefault((s.device, mode), {})
                dev[w] = dev.get(w, 0.0) + joules
        if self.level == "endpoint":
            return
        if w.pod:
            ledger.add("pod_energy_joules_total", (w.namespace, w.endpoint, w.model, w.pod, s.component, s.mode),
                       joules)
        if self.level == "process" and isinstance(s.key, int):
            comm = procs[s.key].comm if s.key in procs else ""
            ledger.add("process_energy_joules_total",
                       (w.namespace, w.endpoint, w.model, str(s.key), comm, s.component, s.mode), joules)

    def classify_new(self, procs: Any, on_gpu: set[int]) -> None:
        """Tell the process table which new processes cannot matter (they are the ``system``
        remainder), so it stops reading them between full scans; GPU residents always matter."""
        if self.level == "process":
            return  # every process has its own series
        table = procs.procs
        for pid in procs.new:
            try:
                matters = pid in on_gpu or self.resolver.matters(pid, table)
            except Exception as e:  # noqa: BLE001 - isolated like resolve: the process stays hot
                self.health.degraded("attribution", "resolve_" + type(e).__name__.lower(), f"pid {pid}: {e}")
                matters = True
            if not matters:
                procs.mark_cold(pid)
        for pid in on_gpu:
            if procs.is_cold(pid):
                procs.mark_hot(pid)

    def contribute(self, snap: Any) -> None:
        snap.set("attribution_info", (self.gpu_idle_policy, self.cpu_idle_policy, self.level), 1)


def with_mig_owners(iv: attribution.GpuInterval, owners: dict[str, Workload], procs: dict) -> attribution.GpuInterval:
    """A MIG GPU's interval with each instance allocated to a pod owned by it: the instance's
    energy goes to the pod when it has no process, and its processes that this host cannot see
    (no hostPID) are the pod's too."""
    insts = []
    for inst in iv.mig:
        owner = owners.get(inst.instance)
        if owner is not None:
            mem: dict[Any, float] = {}
            for pid, b in inst.memory_bytes.items():
                k = pid if pid in procs else owner
                mem[k] = mem.get(k, 0.0) + b
            inst = replace(inst, owner=owner, memory_bytes=mem,
                           sm_util={(p if p in procs else owner): u for p, u in inst.sm_util.items()})
        insts.append(inst)
    return replace(iv, mig=tuple(insts))


def split_models(w: Workload, joules: float, weights: dict[str, float] | None) -> list[tuple[Workload, float]]:
    """A process serving several models (Triton) splits its energy by each model's compute time
    in the last engine scrape; decoupled models with no compute time fall back to request
    shares; with neither, the energy stays on the process's own label set."""
    if not weights:
        return [(w, joules)]
    models = sorted(weights)
    parts = [joules * weights[m] for m in models]
    parts[-1] = joules - math.fsum(parts[:-1])  # exact: the last part takes the rounding
    return [(w._replace(model=m), j) for m, j in zip(models, parts) if j > 0]


def unattributed(gpu_ivs: list[attribution.GpuInterval],
                 cpu_iv: attribution.CpuInterval | None) -> list[attribution.Share]:
    """Fallback when attribution rejects its input: whole devices to unallocated/system."""
    out = [attribution.Share(attribution.UNALLOCATED, iv.device, "gpu", "active", iv.energy_j)
           for iv in gpu_ivs if iv.energy_j > 0]
    if cpu_iv is not None:
        out += [attribution.Share(attribution.SYSTEM, "cpu", comp, "active", j)
                for comp, j in cpu_iv.energy_j.items() if j > 0]
    return out
