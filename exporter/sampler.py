"""The sampling loop: read meters → device energy deltas → attribution → identity → carbon →
ledger → snapshot.

Runs in its own thread at ``--sample.interval`` on absolute deadlines of a monotonic clock (an NTP
step of the wall clock changes nothing). A failing collector never stops the loop: it is counted
in ``wattprint_collector_errors_total``, shown in ``wattprint_collector_up``, logged once per state
change, and retried next sample.

The stages live in :mod:`exporter.pipeline`; :meth:`Sampler.sample` is the whole way of a joule
in one screen. A sample lands whole or not at all: the ledger is a transaction, and every stage
with state gives a checkpoint that is restored when the sample fails, so the next sample covers
the interval.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from typing import Any, Callable

from . import buildinfo, endpoint_table
from .engine_targets import TargetFinder
from .exposition import Exposition, Renderer, Snapshot
from .identity.resolver import Workload
from .ledger import Ledger
from .pipeline.booking import Booking
from .pipeline.carbon import CarbonStage
from .pipeline.cpu import CpuStage
from .pipeline.gpu import GpuStage
from .pipeline.health import Health
from .pipeline.requests import RequestStage

log = logging.getLogger(__name__)


class Sampler:
    def __init__(self, *, gpu: Any, cpu: Any, procs: Any, resolver: Any, interval_s: float,
                 idle_power_config: dict[str, float] | None = None,
                 gpu_idle_policy: str = "memory", cpu_idle_policy: str = "system",
                 level: str = "endpoint", max_series: int = 2000, util_poll_s: float = 0.2,
                 carbon: Any = None, gpu_owners: Callable[[], dict[str, Workload]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.gpu, self.procs, self.resolver = gpu, procs, resolver
        self.interval_s = interval_s
        self.clock = clock
        self.util_poll_s = util_poll_s
        self.ledger = Ledger(max_series)
        self.health = Health(self.ledger)
        self.gpus = GpuStage(gpu, self.health, idle_power_config)
        self.cpu = CpuStage(cpu, procs, self.health)
        self.requests = RequestStage()
        self.marginal: Any = None  # the marginal-cost stage: set with the engine scraper (daemon.start_engines)
        self.booking = Booking(resolver, self.health, gpu_idle_policy=gpu_idle_policy,
                               cpu_idle_policy=cpu_idle_policy, level=level,
                               gpu_owners=(lambda: self.gpus.owners_by_uuid(gpu_owners())) if gpu_owners else None)
        self.carbon = CarbonStage(carbon) if carbon is not None else None
        self.http: Any = None
        self.targets = TargetFinder(resolver, getattr(procs, "read_process_file", None))
        self.renderer = Renderer()
        self._last_t: float | None = None
        self.samples = 0
        self.last_duration_s = 0.0
        self.last_wall = 0.0
        self.last_mono = 0.0
        # the landing page's table: (the sample's clock time, endpoint_table view) of the last two samples
        self.table_views: tuple[tuple[float, dict] | None, tuple[float, dict] | None] = (None, None)
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake: tuple[int, int] | None = None

    # --- what other parts see ----------------------------------------------------------------
    @property
    def cpu_method(self) -> str:
        return self.cpu.method

    @property
    def level(self) -> str:
        return self.booking.level

    @level.setter
    def level(self, v: str) -> None:
        self.booking.level = v

    @property
    def engines(self) -> Any:
        return self.requests.source

    @engines.setter
    def engines(self, scraper: Any) -> None:
        """Attach the engine scraper: its increments land in the next sample, its series here."""
        self.requests.source = scraper

    def exposition(self) -> Exposition:
        return self.renderer.current

    def metrics_text(self) -> str:
        return self.renderer.current.text.decode()

    def engine_targets(self) -> list:
        """Where the local inference servers' metrics are (refreshed by the sampler thread)."""
        return self.targets.targets()

    # --- loop ------------------------------------------------------------------------------
    def start(self) -> None:
        # the loop sleeps in select() on a pipe that stop() writes to: one system call a wake-up,
        # about 40 µs cheaper than threading.Event.wait's lock machinery on a VM
        self._wake = os.pipe()
        self.cpu.start()
        self._thread = threading.Thread(target=self._run, name="wattprint-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._wake is not None:
            os.write(self._wake[1], b"x")
        if self._thread:
            self._thread.join(timeout=5)
        self.cpu.stop()
        if self._wake is not None and (self._thread is None or not self._thread.is_alive()):
            for fd in self._wake:
                os.close(fd)
            self._wake = None

    def _sleep(self, seconds: float) -> None:
        if self._wake is None:
            self._stop.wait(seconds)
        else:
            select.select([self._wake[0]], [], [], max(0.0, seconds))

    def _run(self) -> None:
        deadline = self.clock()
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:  # a bug must not kill the loop: count it and go on
                log.exception("sample failed")
                self.health.fail("sampler", "exception")
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
            polling = self.gpus.active and self.gpu.needs_polling  # no shared GPU: one wake-up a sample
            self._sleep(min(deadline - now, self.util_poll_s) if polling else deadline - now)
            if polling and self.clock() < deadline - 0.01:
                try:
                    self.gpu.poll_util()
                except Exception:  # a polling hiccup must not stop the loop; read() retries
                    log.debug("utilisation poll failed", exc_info=True)

    # --- one sample: the way of a joule ------------------------------------------------------
    def sample(self) -> None:
        t0 = self.clock()
        checkpoint = (self._last_t, self.gpus.checkpoint(), self.cpu.checkpoint(), self.requests.checkpoint())
        dt = 0.0 if self._last_t is None else t0 - self._last_t
        self._last_t = t0
        led = self.ledger
        led.begin()
        try:
            cpu_time = self.cpu.read_time()                    # processes and node CPU time
            gpu_ivs = self.gpus.read(t0, led)                  # GPU energy deltas per device
            cpu_iv = self.cpu.read_energy(dt, cpu_time, led)   # CPU energy per zone
            self.requests.apply(led, t0)                       # engine requests and tokens
            procs = self.procs.procs
            booked = None
            if dt > 0:                                         # attribution → identity → ledger
                weights = self.requests.weights_for if self.requests.model_weights else None  # None: no split
                booked = self.booking.book(gpu_ivs, cpu_iv, procs, self.gpus.uuids(), weights, led)
                if self.carbon is not None:                    # → CO2e from the same split
                    self.carbon.book(booked, led)
            on_gpu = {p for iv in gpu_ivs for p in (*iv.memory_bytes, *iv.sm_util)}
            self.booking.classify_new(self.procs, on_gpu)
        except BaseException:
            led.rollback()
            self._last_t, gpus, cpu, requests = checkpoint  # the meters' baselines too: the next sample covers this
            self.gpus.restore(gpus)
            self.cpu.restore(cpu)
            self.requests.restore(requests)
            raise
        led.commit()
        if self.marginal is not None and self.requests.source is not None:  # what one more token costs
            self.marginal.observe(t0, booked.active if booked is not None else {}, self.requests.drained())
        if self.requests.source is not None:  # engine scraping is on: where are the servers?
            try:
                self.targets.maybe_refresh(t0, procs, on_gpu)
            except Exception as e:  # noqa: BLE001 - discovery must never cost a sample
                self.health.degraded("engines", "discovery_" + type(e).__name__.lower(), str(e))
        self.samples += 1
        self.last_duration_s = self.clock() - t0
        self.last_wall = time.time()
        self.last_mono = time.monotonic()
        snap = self.snapshot()
        self.renderer.render(snap)
        self.table_views = (self.table_views[1], (t0, endpoint_table.view_of(snap.values)))
        self.ready.set()

    # --- exposition: every part contributes its own series -------------------------------------
    def snapshot(self) -> Snapshot:
        snap = Snapshot()
        parts: list[Any] = [self.gpus, self.ledger, self.booking, self.health]
        if self.carbon is not None:
            parts.append(self.carbon)
        parts += [self.requests, self.cpu]
        if self.marginal is not None:
            parts.append(self.marginal)
        if self.requests.source is not None:
            parts.append(self.targets)
        if self.http is not None:  # the HTTP server's connection cap (serve sets it)
            parts.append(self.http)
        for part in parts:
            part.contribute(snap)
        self.contribute(snap)
        return snap

    def contribute(self, snap: Snapshot) -> None:
        snap.set("build_info", buildinfo.labels(), 1)
        snap.set("sample_duration_seconds", (), self.last_duration_s)
        snap.set("samples_total", (), float(self.samples))
        snap.set("sample_interval_seconds", (), self.interval_s)
        snap.set("last_sample_timestamp_seconds", (), self.last_wall)
