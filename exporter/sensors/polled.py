"""What the CPU meters that read sysfs on their own schedule share (RAPL, hwmon): a poller thread,
the per-zone joules read since the sampler's last ``measure()``, and ``checkpoint()``/``restore()``
so that a failed sample hands the same joules again.

A subclass reads its zones in ``_poll(now)`` (under the lock, adding to ``_joules``,
``_estimated`` and ``_errors``), says how often in ``poll_interval()`` and looks for zones again
in ``_rediscover(now)``, called every ``rediscover_s`` of the meter's time.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from .base import CpuReading

log = logging.getLogger(__name__)


class PolledMeter:
    name = ""

    def __init__(self, clock: Callable[[], float] | None, rediscover_s: float) -> None:
        self._clock = clock
        self._vnow = 0.0
        self._lock = threading.Lock()
        self._joules: dict[str, float] = {}      # read, not handed over yet
        self._estimated: dict[str, float] = {}
        self._errors: dict[str, str] = {}
        self._handed: list[tuple[dict[str, float], dict[str, float]]] | None = None  # since the checkpoint
        self._rediscover_at = rediscover_s
        self._rediscover_s = rediscover_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- for the subclass -----------------------------------------------------------------------
    def poll_interval(self) -> float:
        raise NotImplementedError

    def _poll(self, now: float) -> None:
        raise NotImplementedError

    def _rediscover(self, now: float) -> None:
        raise NotImplementedError

    def _now(self) -> float:
        return self._clock() if self._clock is not None else self._vnow

    # --- the poller ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._clock is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._poll_loop, name=f"wattprint-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_interval()):
            try:
                self.poll()
            except Exception:  # a poller hiccup must not end polling; measure() reads again
                log.debug("%s poll failed", self.name, exc_info=True)

    def poll(self) -> None:
        """Read every zone now; what was read waits for the next ``measure()``."""
        with self._lock:
            self._poll(self._now())

    # --- the sampler's side -------------------------------------------------------------------
    def measure(self, dt_s: float, busy_ratio: float | None) -> CpuReading:
        """Per-zone joules since the last measure (primed by the first read of a zone)."""
        if self._clock is None:
            self._vnow += max(0.0, dt_s)
        with self._lock:
            now = self._now()
            if now >= self._rediscover_at:
                try:
                    self._rediscover(now)
                except Exception:  # a tree no one foresaw: keep the zones we have, count it, go on
                    log.warning("%s: looking for zones again failed; the known zones stay",
                                self.name, exc_info=True)
                    self._rediscover_at = now + self._rediscover_s
                    self._errors["discovery"] = "discovery"
            self._poll(now)
            joules, estimated, errors = self._joules, self._estimated, self._errors
            self._joules, self._estimated, self._errors = {}, {}, {}
            if self._handed is not None:  # only a caller that checkpoints can restore
                self._handed.append((joules, estimated))
        return CpuReading(joules, errors, estimated)

    def checkpoint(self) -> Any:
        with self._lock:
            self._handed = []
        return self._vnow

    def restore(self, checkpoint: Any) -> None:
        """Give back what was handed over since the checkpoint: the next measure hands it again
        (and, without a clock, its time: the next measure's Δt covers the failed sample too)."""
        with self._lock:
            self._vnow = checkpoint
            for joules, estimated in self._handed or []:
                for into, part in ((self._joules, joules), (self._estimated, estimated)):
                    for zone, j in part.items():
                        into[zone] = into.get(zone, 0.0) + j
            self._handed = []
