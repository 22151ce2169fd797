"""GPU stage: the backend's readings → per-device energy deltas (booked on the device and node
series) → :class:`~exporter.attribution.GpuInterval` per device, plus the device gauges."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .. import attribution
from ..sensors import idle_table
from .device import FLOOR_MIN_DT_S, GpuAccount, quiet
from .health import Health

GPU_LABELS = ("gpu", "uuid", "name")
FREE = ("", "free", "free", "free")  # the MIG series of slices no instance holds: mig_uuid, GI, CI, profile


class GpuStage:
    def __init__(self, backend: Any, health: Health, idle_power_config: dict[str, float] | None = None) -> None:
        self.backend = backend            # a GpuBackend (exporter.sensors.base), or None
        self.health = health
        self.idle_cfg = idle_power_config or {}
        self.accounts: dict[str, GpuAccount] = {}   # by GPU UUID
        self._reinits = 0
        self.gauges: dict[str, dict[tuple[str, ...], float]] = {}
        self._label_cache: dict[int, tuple[str, str, str]] = {}
        self._idle_cache: dict[tuple[int, str], tuple[float | None, float | None]] = {}

    @property
    def active(self) -> bool:
        return self.backend is not None and self.backend.status.state == "ok"

    def checkpoint(self) -> tuple[dict[str, GpuAccount], int]:
        return {u: a.copy() for u, a in self.accounts.items()}, self._reinits

    def restore(self, cp: tuple[dict[str, GpuAccount], int]) -> None:
        self.accounts, self._reinits = cp

    def read(self, now: float, ledger: Any) -> list[attribution.GpuInterval]:
        if self.backend is None:
            return []
        ivs = []
        failed = False
        power, used, total, nprocs, idle, age, mig_info = {}, {}, {}, {}, {}, {}, {}
        readings = self.backend.read()  # a backend that is not open tries again on its own schedule
        reinits = getattr(self.backend, "reinits", 0)
        if reinits != self._reinits:
            self.health.degraded("gpu", "reinit", f"{self.backend.status.detail}")
            self._reinits = reinits
        if not self.active:
            return []
        for r in readings:
            d = r.device
            labels = self._labels(d)
            acct = self.accounts.get(d.uuid)   # by UUID: a re-initialised driver may number GPUs anew
            if acct is None:
                acct = self.accounts[d.uuid] = GpuAccount()
                ledger.ensure("gpu_energy_joules_total", labels)
            if r.error:
                self.health.fail("gpu", r.error, f"GPU {d.index} ({d.uuid})")
                failed = True
                continue
            for fld, kind in r.field_errors.items():  # degraded alone: counted, the energy still booked
                self.health.degraded("gpu", f"{fld}_{kind}", f"GPU {d.index} ({d.uuid}) {fld}")
            configured, table = self._idle_inputs(d)
            limit = d.power_limit_w or None
            # the floor matters only to intervals of FLOOR_MIN_DT_S or more (a gap): not worked out each second
            long_gap = acct.last_t is not None and now - acct.last_t >= FLOOR_MIN_DT_S
            delta = acct.update(r.energy_mj, r.power_mw, now, acct.power_floor_w(table) if long_gap else None, limit)
            if delta.counter_reset:
                ledger.add("gpu_energy_resets_total", labels, 1)
            if delta.implausible:
                self.health.degraded("gpu", "energy_implausible", f"GPU {d.index} ({d.uuid}): the energy "
                                     "counter advanced faster than the GPU can draw; booked from its power")
            acct.learn_idle(quiet(r.processes, r.sm_util), table, limit)
            power[labels], used[labels] = acct.power_w, float(r.memory_used or 0)
            total[labels], nprocs[labels] = float(d.memory_total), float(len(r.processes))
            idle_w, source = acct.idle_baseline(configured, table)
            idle[labels + (source,)] = idle_w
            age[labels] = acct.idle_age_s(configured is not None)
            if delta.joules is None or delta.dt_s <= 0:
                continue
            ledger.add("gpu_energy_joules_total", labels, delta.joules)
            ledger.add("node_energy_joules_total", ("gpu",), delta.joules)
            iv = attribution.GpuInterval(
                device=f"gpu{d.index}", energy_j=delta.joules, dt_s=delta.dt_s, idle_power_w=idle_w,
                memory_bytes={pid: float(b) for pid, b in r.processes.items()},
                sm_util={pid: u for pid, u in r.sm_util.items() if u > 0})
            if r.mig is not None and d.mig_slices > 0:
                iv = self._mig_interval(iv, d, r, ledger, mig_info)
            ivs.append(iv)
        for index, kind in self.backend.undiscovered.items():
            self.health.fail("gpu", kind, f"GPU {index} (not discovered yet)")
            failed = True
        if not failed:
            self.health.ok("gpu")
        self.gauges = {"gpu_power_watts": power, "gpu_memory_used_bytes": used, "gpu_memory_total_bytes": total,
                       "gpu_processes": nprocs, "gpu_idle_power_watts": idle,
                       "gpu_idle_power_age_seconds": age, "gpu_mig_instance_info": mig_info}
        return ivs

    def _mig_interval(self, iv: attribution.GpuInterval, d: Any, r: Any, ledger: Any,
                      info: dict[tuple[str, ...], float]) -> attribution.GpuInterval:
        """The interval of a MIG GPU: its instances, and each instance's energy booked on the
        GPU-level ``gpu_mig_instance_energy_joules_total`` (the split attribution makes of it)."""
        mig = sorted(r.mig, key=lambda m: (m.gpu_instance, m.compute_instance))
        iv = replace(iv, mig_slices=float(d.mig_slices), mig=tuple(
            attribution.MigInstance(m.uuid, m.slices, {pid: float(b) for pid, b in m.processes.items()},
                                    activity=m.sm_util) for m in mig))
        try:
            parts, method = attribution.mig_split(iv)
        except ValueError as e:  # booking's split fails alike: the GPU's energy goes unattributed, counted
            self.health.degraded("gpu", "mig_invalid", f"GPU {d.index} ({d.uuid}): {e}")
            return replace(iv, mig=(), mig_slices=0.0)
        gpu = (str(d.index), d.uuid)
        for m, (idle_j, active_j) in zip([*mig, None], parts):
            ids = FREE if m is None else (m.uuid, str(m.gpu_instance), str(m.compute_instance), m.profile)
            for mode, joules in (("idle", idle_j), ("active", active_j)):
                ledger.add("gpu_mig_instance_energy_joules_total", gpu + ids + (mode,), joules)
            if m is not None:
                info[gpu + ids + (f"{m.slices:g}", method)] = 1.0
        return iv

    def _labels(self, d: Any) -> tuple[str, str, str]:
        labels = self._label_cache.get(d.index)
        if labels is None or labels[1] != d.uuid:
            labels = self._label_cache[d.index] = (str(d.index), d.uuid, d.name)
        return labels

    def _idle_inputs(self, d: Any) -> tuple[float | None, float | None]:
        """(configured idle watts, the model table's) for a device; the same every sample."""
        key = (d.index, d.uuid)
        found = self._idle_cache.get(key)
        if found is None:
            configured = next((self.idle_cfg[k] for k in (d.uuid, str(d.index)) if k in self.idle_cfg), None)
            found = self._idle_cache[key] = (configured, idle_table.lookup(d.name))
        return found

    def owners_by_uuid(self, owners: dict[str, Any]) -> dict[str, Any]:
        """The kubelet's GPU → workload map keyed by GPU UUID: NVIDIA's device plugin names GPUs by
        UUID already; ROCm's names them by PCI address, mapped here through each GPU's address."""
        alias = {d.pci_bus_id: d.uuid for d in self.backend.devices if d.pci_bus_id} if self.backend else {}
        if not alias or not owners:
            return owners
        return {alias.get(k, k): w for k, w in owners.items()}

    def uuids(self) -> dict[str, str]:
        """Attribution device name → GPU UUID."""
        return {f"gpu{d.index}": d.uuid for d in self.backend.devices} if self.backend is not None else {}

    def contribute(self, snap: Any) -> None:
        for metric, series in self.gauges.items():
            if series:
                snap.values.setdefault(metric, {}).update(series)
        b = self.backend
        if b is None:
            return
        st = b.status
        if st.state != "ok":
            snap.set("collector_up", ("gpu",), 0.0)  # no library: a state, reported once, not an error storm
        for d in b.devices:
            snap.set("gpu_info", (str(d.index), d.uuid, d.name, d.energy_method, d.mig_mode, st.backend,
                                  st.driver), 1)
