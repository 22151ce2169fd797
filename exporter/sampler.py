"""The sampling loop: read meters → device energy deltas → attribution → ledger → snapshot.

Runs in its own thread at ``--sample.interval`` on absolute deadlines of a monotonic clock (an NTP
step of the wall clock changes nothing). A failing collector never stops the loop: it is counted
in ``wattprint_collector_errors_total``, shown in ``wattprint_collector_up``, logged once per state
change, and retried next sample.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

from . import __version__, attribution
from .carbon import accounting
from .carbon.accounting import Carbon
from .exposition import Renderer, Snapshot
from .identity.resolver import SYSTEM, UNALLOCATED, Resolver, Workload
from .ledger import Ledger
from .sensors import idle_table
from .sensors.cpu_estimate import CpuPowerModel
from .sensors.nvml import GpuMeter, GpuReading
from .sensors.procfs import ProcessTable
from .sensors.rapl import RaplMeter

log = logging.getLogger(__name__)


@dataclass
class _GpuState:
    last_mj: int | None = None
    last_power_w: float | None = None
    last_t: float | None = None
    min_power_w: float | None = None      # lowest power seen (learned baseline)
    min_idle_power_w: float | None = None  # lowest power seen with no SM activity
    power_w: float = 0.0


@dataclass
class CollectorState:
    up: bool = True


class Sampler:
    def __init__(self, *, gpu: GpuMeter | None, rapl: RaplMeter | None, cpu_model: CpuPowerModel,
                 procs: ProcessTable, resolver: Resolver, interval_s: float,
                 idle_power_config: dict[str, float] | None = None,
                 gpu_idle_policy: str = "memory", cpu_idle_policy: str = "system",
                 level: str = "endpoint", max_series: int = 2000, util_poll_s: float = 0.2,
                 carbon: Carbon | None = None, gpu_owners: Callable[[], dict[str, Workload]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.gpu, self.rapl, self.cpu_model, self.procs = gpu, rapl, cpu_model, procs
        self.resolver = resolver
        self.interval_s = interval_s
        self.idle_cfg = idle_power_config or {}
        self.gpu_idle_policy, self.cpu_idle_policy, self.level = gpu_idle_policy, cpu_idle_policy, level
        self.clock = clock
        self.util_poll_s = util_poll_s
        self.carbon = carbon
        self.gpu_owners = gpu_owners or dict   # GPU UUID -> workload that was allocated the GPU
        self.engines: Any = None   # the EngineScraper, when engine scraping is on
        self.static_targets: list = []
        self.budgets: list[tuple[tuple[str, str, str], float]] = []
        self.model_weights: dict[Workload, dict[str, float]] = {}
        self._engine_targets: list = []
        self._targets_at = -1e18
        self.ledger = Ledger(max_series)
        self.renderer = Renderer()
        self.collectors: dict[str, CollectorState] = {}
        self._gpu_state: dict[int, _GpuState] = {}
        self._last_t: float | None = None
        self.samples = 0
        self.last_duration_s = 0.0
        self.last_wall = 0.0
        self.last_mono = 0.0
        self.busy_ratio = 0.0
        self.gauges = Snapshot()
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.cpu_method = "rapl" if rapl is not None and rapl.usable else "estimate"

    # --- loop ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="wattprint-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        deadline = self.clock()
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:  # a bug must not kill the loop: count it and go on
                log.exception("sample failed")
                self._fail("sampler", "exception")
            deadline += self.interval_s
            now = self.clock()
            if deadline < now:  # overran: skip missed ticks instead of bursting
                deadline = now + self.interval_s - ((now - deadline) % self.interval_s)
            self._wait_until(deadline)

    def _wait_until(self, deadline: float) -> None:
        """Sleep to the next sample, polling GPU process utilisation every ``util_poll_s``."""
        while not self._stop.is_set():
            now = self.clock()
            if now >= deadline:
                return
            self._stop.wait(min(deadline - now, self.util_poll_s))
            if self.gpu is not None and self.gpu.status.state == "ok" and self.clock() < deadline - 0.01:
                try:
                    self.gpu.poll_util()
                except Exception:  # a polling hiccup must not stop the loop; read() retries
                    log.debug("utilisation poll failed", exc_info=True)

    def _fail(self, name: str, kind: str, detail: str = "") -> None:
        """Count a collector error; log only when the collector changes state."""
        self.ledger.add("collector_errors_total", (name, kind), 1)
        state = self.collectors.setdefault(name, CollectorState())
        if state.up:
            log.warning("collector %s failing: %s %s", name, kind, detail)
        state.up = False

    def _ok(self, name: str) -> None:
        state = self.collectors.setdefault(name, CollectorState())
        if not state.up:
            log.info("collector %s recovered", name)
        state.up = True

    # --- one sample ------------------------------------------------------------------------
    def sample(self) -> None:
        t0 = self.clock()
        checkpoint = self._checkpoint()
        dt = 0.0 if self._last_t is None else t0 - self._last_t
        self._last_t = t0
        snap = Snapshot()
        self.ledger.begin()
        try:
            cpu_deltas = self._read_procs()
            busy_s, total_s = self._read_node_cpu()
            self.busy_ratio = min(1.0, busy_s / total_s) if total_s > 0 else 0.0
            gpu_ivs = self._read_gpus(t0, snap)
            cpu_iv = self._read_cpu(dt, busy_s, cpu_deltas, snap)
            self._apply_engine_counts()
            if dt > 0:
                self._attribute(gpu_ivs, cpu_iv)
        except BaseException:
            self.ledger.rollback()
            self._restore(checkpoint)  # the meters' baselines too: the next sample covers this interval
            raise
        self.ledger.commit()
        if t0 - self._targets_at >= 10.0:
            self._targets_at = t0
            self._find_engine_targets()
        self.samples += 1
        self.last_duration_s = self.clock() - t0
        self.last_wall = time.time()
        self.last_mono = time.monotonic()
        self._render(snap)
        self.ready.set()

    def _checkpoint(self) -> tuple:
        """The meters' baselines before a sample, so a failed sample can be undone whole."""
        procs = self.procs
        return (self._last_t, {i: replace(st) for i, st in self._gpu_state.items()},
                dict(self.rapl._last) if self.rapl is not None else None,
                procs.procs, {pid: (p.ticks, p.comm, p.ppid) for pid, p in procs.procs.items()},
                procs._last_cpu, procs._scanned)

    def _restore(self, cp: tuple) -> None:
        last_t, gpu_state, rapl_last, procs, proc_state, last_cpu, scanned = cp
        self._last_t, self._gpu_state = last_t, gpu_state
        if self.rapl is not None and rapl_last is not None:
            self.rapl._last = rapl_last
        for pid, (ticks, comm, ppid) in proc_state.items():
            p = procs[pid]
            p.ticks, p.comm, p.ppid = ticks, comm, ppid
        self.procs.procs, self.procs._last_cpu, self.procs._scanned = procs, last_cpu, scanned

    def _read_procs(self) -> dict[int, float]:
        try:
            deltas = self.procs.scan()
            self._ok("procfs")
            return deltas
        except OSError as e:
            self._fail("procfs", type(e).__name__.lower(), str(e))
            return {}

    def _read_node_cpu(self) -> tuple[float, float]:
        try:
            return self.procs.node_delta()
        except (OSError, ValueError) as e:
            self._fail("procfs", "stat_" + type(e).__name__.lower(), str(e))
            return 0.0, 0.0

    def _read_gpus(self, now: float, snap: Snapshot) -> list[attribution.GpuInterval]:
        if self.gpu is None or self.gpu.status.state != "ok":
            return []
        ivs = []
        failed = False
        for r in self.gpu.read():
            d = r.device
            labels = (str(d.index), d.uuid, d.name)
            st = self._gpu_state.setdefault(d.index, _GpuState())
            self.ledger.ensure("gpu_energy_joules_total", labels)
            if r.error:
                self._fail("gpu", r.error, f"GPU {d.index} ({d.uuid})")
                failed = True
                continue
            joules, dt = self._gpu_delta(r, st, now, labels)
            self._learn_idle(r, st)
            snap.set("gpu_power_watts", labels, st.power_w)
            snap.set("gpu_memory_used_bytes", labels, float(r.memory_used or 0))
            snap.set("gpu_memory_total_bytes", labels, float(d.memory_total))
            snap.set("gpu_processes", labels, float(len(r.processes)))
            idle_w, source = self._idle_baseline(d.index, d.uuid, d.name, st)
            snap.set("gpu_idle_power_watts", labels + (source,), idle_w)
            if joules is None or dt <= 0:
                continue
            self.ledger.add("gpu_energy_joules_total", labels, joules)
            self.ledger.add("node_energy_joules_total", ("gpu",), joules)
            ivs.append(self._gpu_interval(r, joules, dt, idle_w))
        for index, kind in self.gpu.undiscovered.items():
            self._fail("gpu", kind, f"GPU {index} (not discovered yet)")
            failed = True
        if not failed:
            self._ok("gpu")
        return ivs

    def _gpu_delta(self, r: GpuReading, st: _GpuState, now: float,
                   labels: tuple[str, ...]) -> tuple[float | None, float]:
        """Joules since this GPU's last good read (gaps included: nothing is lost)."""
        power_w = (r.power_mw or 0) / 1000.0
        dt = 0.0 if st.last_t is None else now - st.last_t
        joules: float | None = None
        if r.energy_mj is not None:
            if st.last_mj is not None:
                if r.energy_mj >= st.last_mj:
                    joules = (r.energy_mj - st.last_mj) / 1000.0
                else:  # counter went backwards: driver reload. Integrate power for this interval.
                    self.ledger.add("gpu_energy_counter_resets_total", labels, 1)
                    joules = (power_w + (st.last_power_w or power_w)) / 2 * dt
            st.last_mj = r.energy_mj
        elif st.last_t is not None:
            joules = (power_w + (st.last_power_w if st.last_power_w is not None else power_w)) / 2 * dt
        st.last_t, st.last_power_w, st.power_w = now, power_w, power_w
        return joules, dt

    def _learn_idle(self, r: GpuReading, st: _GpuState) -> None:
        p = st.power_w
        st.min_power_w = p if st.min_power_w is None else min(st.min_power_w, p)
        # Quiet = no compute process at all, or samples that all say 0 % SM. "No new sample" is
        # not quiet: a read soon after the previous one can find none while the GPU is busy.
        quiet = not r.processes or (bool(r.sm_util) and not any(v > 0 for v in r.sm_util.values()))
        if quiet:
            st.min_idle_power_w = p if st.min_idle_power_w is None else min(st.min_idle_power_w, p)

    def _idle_baseline(self, index: int, uuid: str, name: str, st: _GpuState) -> tuple[float, str]:
        for key in (uuid, str(index)):
            if key in self.idle_cfg:
                return self.idle_cfg[key], "configured"
        if st.min_idle_power_w is not None:
            return st.min_idle_power_w, "learned"
        table = idle_table.lookup(name)
        if table is not None:
            return min(table, st.min_power_w if st.min_power_w is not None else table), "table"
        return (st.min_power_w or 0.0), "learned"

    def _gpu_interval(self, r: GpuReading, joules: float, dt: float, idle_w: float) -> attribution.GpuInterval:
        util = {pid: u for pid, u in r.sm_util.items() if u > 0}
        mem = {pid: float(b) for pid, b in r.processes.items()}
        return attribution.GpuInterval(device=f"gpu{r.device.index}", energy_j=joules, dt_s=dt,
                                       idle_power_w=idle_w, memory_bytes=mem, sm_util=util)

    def _read_cpu(self, dt: float, busy_s: float, cpu_deltas: dict[int, float],
                  snap: Snapshot) -> attribution.CpuInterval | None:
        energy: dict[str, float] = {}
        if self.cpu_method == "rapl":
            assert self.rapl is not None
            deltas, errors = self.rapl.read()
            for zone, kind in errors.items():
                self._fail("rapl", kind, f"zone {zone}")
            if not errors:
                self._ok("rapl")
            for z in self.rapl.zones:
                labels = (z.socket, z.domain, "rapl")
                self.ledger.ensure("cpu_energy_joules_total", labels)
                j = deltas.get(z.zone, 0.0)
                self.ledger.add("cpu_energy_joules_total", labels, j)
                if z.used_in_total:
                    energy[z.component] = energy.get(z.component, 0.0) + j
                snap.set("cpu_zone_info", (z.zone, z.socket, z.domain, "rapl",
                                           str(z.used_in_total).lower(), str(z.readable).lower()), 1)
        else:
            labels = ("all", "package", "estimate")
            self.ledger.ensure("cpu_energy_joules_total", labels)
            j = self.cpu_model.energy_j(self.busy_ratio, dt) if dt > 0 else 0.0
            self.ledger.add("cpu_energy_joules_total", labels, j)
            energy["cpu"] = j
            snap.set("cpu_zone_info", ("estimate", "all", "package", "estimate", "true", "true"), 1)
        for component, j in energy.items():
            self.ledger.ensure("node_energy_joules_total", (component,))
            self.ledger.add("node_energy_joules_total", (component,), j)
        if dt <= 0:
            return None
        return attribution.CpuInterval(energy_j=energy, busy_ratio=self.busy_ratio,
                                       cpu_seconds={pid: s for pid, s in cpu_deltas.items() if s > 0},
                                       node_busy_seconds=busy_s)

    # --- attribution: per process, rolled up to workloads -----------------------------------
    def _attribute(self, gpu_ivs: list[attribution.GpuInterval],
                   cpu_iv: attribution.CpuInterval | None) -> None:
        procs = self.procs.procs
        on_gpu = {pid for iv in gpu_ivs for pid in (*iv.memory_bytes, *iv.sm_util)}
        try:
            shares = attribution.split_interval(gpu_ivs, cpu_iv, gpu_idle_policy=self.gpu_idle_policy,
                                                cpu_idle_policy=self.cpu_idle_policy)
        except ValueError as e:  # bad input from a meter: keep every joule, visibly unattributed
            self._fail("attribution", "invalid_input", str(e))
            shares = _unattributed(gpu_ivs, cpu_iv)
        by_workload: dict[Workload, float] = {}
        residency: dict[tuple[str, str], dict[Workload, float]] = {}  # (GPU, mode|"any") -> joules by workload
        owners = self.gpu_owners()
        uuid = {f"gpu{d.index}": d.uuid for d in self.gpu.devices} if owners and self.gpu else {}
        for s in shares:
            # a GPU allocated to a pod belongs to it: idle with no process, or processes we cannot see
            owner = owners.get(uuid.get(s.device, "")) if owners and s.component == "gpu" else None
            if s.key == attribution.UNALLOCATED:
                w = owner or UNALLOCATED
            elif s.key == attribution.SYSTEM:
                w = SYSTEM
            elif owner is not None and s.key not in procs:
                w = owner
            else:
                w = self.resolver.resolve(s.key, procs, on_gpu=s.key in on_gpu)
            for w, joules in self._split_models(w, s.joules):
                self._book(s, w, joules, procs, by_workload, residency)
        self.resolver.forget(procs)
        if self.carbon is not None:
            self._account_carbon(by_workload, residency, {iv.device: iv.dt_s for iv in gpu_ivs})

    def _book(self, s: attribution.Share, w: Workload, joules: float, procs: dict,
              by_workload: dict[Workload, float], residency: dict[tuple[str, str], dict[Workload, float]]) -> None:
        by_workload[w] = by_workload.get(w, 0.0) + joules
        if s.component == "gpu":  # who holds each GPU: idle (residency) shares, else any share
            for mode in (s.mode, "any"):
                dev = residency.setdefault((s.device, mode), {})
                dev[w] = dev.get(w, 0.0) + joules
        self.ledger.add("endpoint_energy_joules_total", (w.namespace, w.endpoint, w.model, s.component, s.mode),
                        joules)
        if self.level in ("pod", "process") and w.pod:
            self.ledger.add("pod_energy_joules_total",
                            (w.namespace, w.endpoint, w.model, w.pod, s.component, s.mode), joules)
        if self.level == "process" and isinstance(s.key, int):
            comm = procs[s.key].comm if s.key in procs else ""
            self.ledger.add("process_energy_joules_total",
                            (w.namespace, w.endpoint, w.model, str(s.key), comm, s.component, s.mode), joules)

    def _split_models(self, w: Workload, joules: float) -> list[tuple[Workload, float]]:
        """A process serving several models (Triton) splits its energy by each model's compute time
        in the last engine scrape; decoupled models with no compute time fall back to request
        shares; with neither, the energy stays on the process's own label set."""
        weights = self.model_weights.get(w)
        if not weights:
            return [(w, joules)]
        models = sorted(weights)
        parts = [joules * weights[m] for m in models]
        parts[-1] = joules - math.fsum(parts[:-1])  # exact: the last part takes the rounding
        return [(replace(w, model=m), j) for m, j in zip(models, parts) if j > 0]

    # --- inference engines: requests and tokens ------------------------------------------------
    def _apply_engine_counts(self) -> None:
        if self.engines is None:
            return
        compute: dict[Workload, dict[str, float]] = {}
        requests: dict[Workload, dict[str, float]] = {}
        for inc in self.engines.drain():
            w, c = inc.workload, inc.counts
            labels = (w.namespace, w.endpoint, inc.model)
            self.ledger.add("endpoint_requests_total", labels, c.get("requests", 0.0))
            self.ledger.add("endpoint_tokens_total", labels + ("prompt",), c.get("prompt_tokens", 0.0))
            self.ledger.add("endpoint_tokens_total", labels + ("generation",), c.get("generation_tokens", 0.0))
            compute.setdefault(w, {})[inc.model] = c.get("compute_seconds", 0.0)
            requests.setdefault(w, {})[inc.model] = c.get("requests", 0.0)
        for w in compute:
            if len(compute[w]) < 2:
                continue  # one model: nothing to split
            basis = compute[w] if sum(compute[w].values()) > 0 else requests[w]
            total = sum(basis.values())
            if total > 0:
                self.model_weights[w] = {m: v / total for m, v in basis.items()}

    def engine_targets(self) -> list:
        """Where the local inference servers' metrics are (refreshed by the sampler thread)."""
        return self._engine_targets

    def _find_engine_targets(self) -> None:
        from .engine_scraper import Target
        from .engines import READERS, discovery
        from .identity import cmdline

        procs = self.procs.procs
        out: dict[str, Target] = {}
        for pid, p in procs.items():
            ident = cmdline.detect(p.cmdline)
            if ident is None or ident.engine not in READERS:
                continue
            parent = procs.get(p.ppid)
            pident = cmdline.detect(parent.cmdline) if parent is not None else None
            if pident is not None and pident.engine == ident.engine:
                continue  # a shard, stub or runner of a server already listed
            port = discovery.metrics_port_from_cmdline(ident.engine, p.cmdline)  # None: metrics off
            path, host = READERS[ident.engine].metrics_path, "127.0.0.1"
            meta = self.resolver.pod_of(p)
            if meta is not None:  # reach the pod on its own IP; its annotations win
                host = meta.pod_ip or host
                port = int(meta.annotations.get("prometheus.io/port") or port or 0) or None
                path = meta.annotations.get("prometheus.io/path") or path
            if port is None:
                continue
            url = f"http://{host}:{port}{path}"
            out[url] = Target(self.resolver.resolve(pid, procs), ident.engine, url, ident.model)
        for t in self.static_targets:
            out[t.url] = t
        self._engine_targets = list(out.values())

    def _account_carbon(self, by_workload: dict[Workload, float],
                        residency: dict[tuple[str, str], dict[Workload, float]], gpu_dt: dict[str, float]) -> None:
        """ΔCO2e = ΔE × PUE × intensity(now), per workload and for the node; embodied per GPU-second;
        counterfactual regions. The intensity is read from memory (no I/O)."""
        c = self.carbon
        assert c is not None
        k = c.grams_per_joule(c.current())
        op = accounting.operational(by_workload, k)
        for w, g in op.items():
            self.ledger.add("endpoint_co2e_grams_total", (w.namespace, w.endpoint, w.model, "operational"), g)
        self.ledger.add("node_co2e_grams_total", ("operational",), sum(op.values()))
        holders = {dev: residency.get((dev, "idle")) or residency.get((dev, "any"), {}) for dev in gpu_dt}
        emb = accounting.embodied(holders, gpu_dt, c.embodied_g_per_gpu_s, UNALLOCATED)
        for w, g in emb.items():
            self.ledger.add("endpoint_co2e_grams_total", (w.namespace, w.endpoint, w.model, "embodied"), g)
        self.ledger.add("node_co2e_grams_total", ("embodied",), sum(emb.values()))
        for (w, region), g in accounting.counterfactual(by_workload, c.pue, c.counterfactual).items():
            self.ledger.add("counterfactual_co2e_grams_total", (w.namespace, w.endpoint, w.model, region), g)

    # --- exposition ------------------------------------------------------------------------
    def _render(self, snap: Snapshot) -> None:
        import platform

        for metric, series in self.ledger.snapshot().items():
            for labels, v in series.items():
                snap.set(metric, labels, v)
        for metric, n in self.ledger.folded.items():
            snap.set("attribution_folded_series_total", (metric,), float(n))
        snap.set("build_info", (__version__, platform.python_version()), 1)
        snap.set("attribution_info", (self.gpu_idle_policy, self.cpu_idle_policy, self.level), 1)
        if self.gpu is not None and self.gpu.status.state != "ok":
            snap.set("collector_up", ("gpu",), 0.0)  # no NVML: a state, reported once, not an error storm
        if self.gpu is not None:
            st = self.gpu.status
            for d in self.gpu.devices:
                snap.set("gpu_info", (str(d.index), d.uuid, d.name, d.energy_method, d.mig_mode,
                                      st.backend, st.driver), 1)
        for name, c in self.collectors.items():
            snap.set("collector_up", (name,), 1.0 if c.up else 0.0)
        if self.carbon is not None:
            self._render_carbon(snap)
        for labels, grams in self.budgets:
            snap.set("endpoint_budget_grams_per_request", labels, grams)
        if self.engines is not None:
            for t, st in list(self.engines.states.items()):
                w = t.workload
                snap.set("engine_scrape_up", (w.namespace, w.endpoint, w.model, t.engine), 1.0 if st.up else 0.0)
                for kind, n in st.errors.items():
                    snap.set("engine_scrape_errors_total", (w.endpoint, t.engine, kind), float(n))
            for (endpoint, engine), n in list(self.engines.resets.items()):
                snap.set("engine_counter_resets_total", (endpoint, engine), float(n))
        snap.set("cpu_busy_ratio", (), self.busy_ratio)
        snap.set("sample_duration_seconds", (), self.last_duration_s)
        snap.set("samples_total", (), float(self.samples))
        snap.set("sample_interval_seconds", (), self.interval_s)
        snap.set("last_sample_timestamp_seconds", (), self.last_wall)
        snap.set("processes_tracked", (), float(len(self.procs.procs)))
        self.renderer.render(snap)


    def _render_carbon(self, snap: Snapshot) -> None:
        c = self.carbon
        assert c is not None
        cur = c.current()
        region = c.region.key
        snap.set("carbon_info", (region, cur.provider, cur.zone, cur.source, c.region.how), 1)
        snap.set("grid_intensity_grams_per_kwh", (region, c.region.key, "static", "average"), c.region.grams_per_kwh)
        snap.set("grid_intensity_age_seconds", ("static", c.region.key, "average"), 0.0)
        now = time.time()
        for r in c.service.readings():
            snap.set("grid_intensity_grams_per_kwh", (region, r.zone, r.provider, r.signal), r.grams_per_kwh)
            snap.set("grid_intensity_age_seconds", (r.provider, r.zone, r.signal), max(0.0, now - r.observed_at))
        for name, st in c.service.stats().items():
            snap.set("collector_up", (f"intensity_{name}",), 1.0 if st["up"] else 0.0)
            for kind, n in st["errors"].items():
                snap.set("collector_errors_total", (f"intensity_{name}", kind), float(n))
        snap.set("pue_ratio", (c.pue_source,), c.pue)
        snap.set("embodied_grams_per_gpu_second", (), c.embodied_g_per_gpu_s)
        for model, g in c.training_g.items():
            snap.set("model_training_co2e_grams", (model,), g)


def _unattributed(gpu_ivs: list[attribution.GpuInterval],
                  cpu_iv: attribution.CpuInterval | None) -> list[attribution.Share]:
    """Fallback when attribution rejects its input: whole devices to unallocated/system."""
    out = [attribution.Share(attribution.UNALLOCATED, iv.device, "gpu", "active", iv.energy_j)
           for iv in gpu_ivs if iv.energy_j > 0]
    if cpu_iv is not None:
        out += [attribution.Share(attribution.SYSTEM, "cpu", comp, "active", j)
                for comp, j in cpu_iv.energy_j.items() if j > 0]
    return out
