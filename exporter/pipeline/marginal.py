"""Marginal-cost stage: cuts each endpoint's traffic into windows of its own engine readings and
fits what one more prompt or generated token costs (:mod:`exporter.energy_model`, pure math).

A window's edges are the times of two good engine scrapes (the scraper stamps each reading with
the monotonic time its response arrived), so its tokens are exactly those the engine counted
between them. Its energy is the endpoint's **active** energy over the same span: the stage keeps
each endpoint's cumulative active energy at every sample's time and interpolates it at the
window's edges. Idle energy stays out (it is the reservation's fixed cost, exported as it is).

- A window closes at the first reading at least ``window_s`` after it opened; windows older than
  ``horizon_s`` leave the fit. The fit is redone every ``REFIT_EVERY`` windows (every window
  while there are fewer than twice ``min_windows``), at most ``FITS_PER_SAMPLE`` a sample, the
  longest-waiting first: a fit of an hour of 10 s windows costs ~15 ms of pure Python, so many
  endpoints (a hostile neighbour's fake servers included) slow each one's refits, never the loop.
- A window that saw the engine's counters go backwards (a restart) is dropped (it opens again at
  that reading), as is one whose opening edge falls before the endpoint's first energy point.
- Only endpoints with engine readings are tracked; at most ``MAX_ENDPOINTS`` at once (the least
  recently read gives way), and one that sends no reading for ``horizon_s`` is forgotten.

It runs after the sample's ledger commit, on what that sample booked: a rolled-back sample leaves
no trace here, and the next sample's energy covers its interval."""

from __future__ import annotations

import bisect
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable

from .. import energy_model

log = logging.getLogger(__name__)
MAX_ENDPOINTS = 256
REFIT_EVERY = 4  # windows closed between fits (every one while there are few): an hour of 10 s windows is 360
FITS_PER_SAMPLE = 1  # at most this many fits a sample (~15 ms each for an hour of windows); the rest wait their turn
Key = tuple[str, str, str]  # (namespace, endpoint, model): the energy and requests series' labels


@dataclass
class _Track:
    times: list[float] = field(default_factory=list)     # sample times …
    energy: list[float] = field(default_factory=list)    # … and the cumulative active joules then
    cum: float = 0.0
    start: float | None = None     # the open window's first edge (a reading's time)
    prompt: float = 0.0
    generation: float = 0.0
    end: float | None = None       # the latest reading's time: where the open window may close
    last_seen: float = 0.0
    windows: deque = field(default_factory=deque)   # (end time, energy_model.Window)
    fit: energy_model.Fit | None = None
    unfitted: int = 0              # windows closed since the last fit
    due: bool = False              # waiting in the stage's queue for a fit

    def energy_at(self, t: float) -> float | None:
        """Cumulative active energy at ``t``, linear between sample points; None outside them."""
        ts = self.times
        if not ts or t < ts[0] or t > ts[-1]:
            return None
        i = bisect.bisect_left(ts, t)
        if ts[i] == t:
            return self.energy[i]
        t0, t1, e0, e1 = ts[i - 1], ts[i], self.energy[i - 1], self.energy[i]
        return e0 + (e1 - e0) * (t - t0) / (t1 - t0)


class MarginalStage:
    def __init__(self, window_s: float = 10.0, horizon_s: float = 3600.0, min_windows: int = 12,
                 enabled: bool = True) -> None:
        self.window_s, self.horizon_s, self.min_windows = window_s, horizon_s, min_windows
        self.enabled = enabled
        self.tracks: dict[Key, _Track] = {}
        self._states: dict[Key, str] = {}
        self._due: deque[Key] = deque()  # tracks whose fit is due, oldest first

    def observe(self, now: float, active: dict[Key, float], readings: Iterable[Any]) -> None:
        """One committed sample: ``active`` is the active joules booked per endpoint over the
        interval ending at ``now``; ``readings`` the engine increments it booked (each with its
        reading time ``at`` and ``reset`` flag)."""
        if not self.enabled:
            return
        tracks = self.tracks
        for inc in readings:
            w = inc.workload
            key = (w.namespace, w.endpoint, inc.model)
            tr = tracks.get(key)
            if tr is None:
                tr = self._new(key, now)
            tr.last_seen = now
            at = inc.at if inc.at is not None else now
            if tr.start is None or inc.reset or at < tr.start:  # (re)open: these tokens have no edge
                tr.start, tr.prompt, tr.generation, tr.end = at, 0.0, 0.0, None
                continue
            c = inc.counts
            tr.prompt += c.get("prompt_tokens", 0.0)
            tr.generation += c.get("generation_tokens", 0.0)
            tr.end = at
        for key, tr in tracks.items():  # every tracked endpoint gets a point, with energy or without
            tr.cum += active.get(key, 0.0)
            if tr.times and now <= tr.times[-1]:
                continue
            tr.times.append(now)
            tr.energy.append(tr.cum)
            if tr.end is not None and tr.start is not None and tr.end - tr.start >= self.window_s:
                self._close(key, tr, tr.end)
            self._prune(tr, now)
        for key in [k for k, tr in tracks.items() if now - tr.last_seen > self.horizon_s]:
            del tracks[key]
            self._states.pop(key, None)
        for _ in range(FITS_PER_SAMPLE):
            while self._due and self._due[0] not in tracks:  # forgotten meanwhile
                self._due.popleft()
            if not self._due:
                break
            key = self._due.popleft()
            self._fit(key, tracks[key])

    def _new(self, key: Key, now: float) -> _Track:
        if len(self.tracks) >= MAX_ENDPOINTS:
            oldest = min(self.tracks, key=lambda k: self.tracks[k].last_seen)
            del self.tracks[oldest]
            self._states.pop(oldest, None)
        tr = self.tracks[key] = _Track()
        return tr

    def _close(self, key: Key, tr: _Track, end: float) -> None:
        start = tr.start
        assert start is not None
        e0, e1 = tr.energy_at(start), tr.energy_at(end)
        if e0 is not None and e1 is not None:
            tr.windows.append((end, energy_model.Window(end - start, max(0.0, e1 - e0), tr.prompt, tr.generation)))
            while tr.windows and tr.windows[0][0] < end - self.horizon_s:
                tr.windows.popleft()
            tr.unfitted += 1
        if not tr.due and (tr.unfitted >= REFIT_EVERY or (tr.unfitted and len(tr.windows) < 2 * self.min_windows)):
            tr.due = True
            self._due.append(key)
        tr.start, tr.prompt, tr.generation, tr.end = end, 0.0, 0.0, None

    def _fit(self, key: Key, tr: _Track) -> None:
        tr.due, tr.unfitted = False, 0
        try:
            tr.fit = energy_model.fit([w for _, w in tr.windows], min_windows=self.min_windows)
        except (ArithmeticError, ValueError) as e:  # odd data must cost this endpoint's fit, never the sample
            tr.fit = energy_model.Fit("fit_failed", len(tr.windows), detail=f"{type(e).__name__}: {e}")
        if self._states.get(key) != tr.fit.state:
            self._states[key] = tr.fit.state
            log.info("energy model of %s/%s (%s): %s%s", key[0], key[1], key[2], tr.fit.state,
                     f" ({tr.fit.detail})" if tr.fit.detail else "")

    @staticmethod
    def _prune(tr: _Track, now: float) -> None:
        """Keep the energy points from the last one at or before the open window's edge."""
        keep_from = tr.start if tr.start is not None else now
        i = bisect.bisect_right(tr.times, keep_from) - 1
        if i > 0:
            del tr.times[:i], tr.energy[:i]

    def contribute(self, snap: Any) -> None:
        for key, tr in self.tracks.items():
            f = tr.fit
            if f is None:
                continue
            snap.set("endpoint_energy_model_windows", key, float(f.windows))
            snap.set("endpoint_energy_model_state", key + (f.state,), 1.0)
            if f.r_squared is not None and f.published:
                snap.set("endpoint_energy_model_r_squared", key, f.r_squared)
            if f.fixed_w is not None and f.published:
                snap.set("endpoint_energy_model_fixed_active_watts", key, f.fixed_w)
            for phase, v, se in (("prefill", f.prefill, f.prefill_se), ("decode", f.decode, f.decode_se)):
                if v is not None and se is not None:
                    snap.set("endpoint_marginal_joules_per_token", key + (phase,), v)
                    snap.set("endpoint_marginal_joules_per_token_stderr", key + (phase,), se)
