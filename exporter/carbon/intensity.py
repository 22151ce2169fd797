"""The grid intensity in use at each moment: live providers polled in the background, answered
from memory.

``IntensityService.run()`` polls every provider on its own schedule (its ``poll_interval_s`` or
the service's) and keeps each provider's last good reading per (zone, signal). A failure is
counted by kind, retried with exponential back-off and jitter (never sooner than a 429's
Retry-After), and logged once per state change. ``current()`` does no I/O: it walks the providers
in the order given and returns the first one's newest *average* reading that is younger than
``max_age_s``; failing that, the static value. Marginal readings (WattTime MOER) are kept for
``readings()`` and ``current("marginal")`` but never answer for ``"average"``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .providers.base import MAX_PLAUSIBLE_G_PER_KWH, SIGNALS, Provider, ProviderError, Reading  # not every adapter

log = logging.getLogger(__name__)

STATIC = "static"


@dataclass(frozen=True)
class Current:
    grams_per_kwh: float
    provider: str  # a provider's name, or "static"
    zone: str
    signal: str
    age_s: float  # now - the data point's own time; 0 for the static value
    source: str


@dataclass(eq=False)
class _State:
    provider: Provider
    successes: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    failures_in_a_row: int = 0
    last_success: float | None = None
    last_error: str | None = None
    up: bool | None = None  # None until the first poll
    readings: dict[tuple[str, str], Reading] = field(default_factory=dict)  # (zone, signal)


class IntensityService:
    def __init__(
        self,
        providers: Sequence[Provider],
        static_g_per_kwh: float,
        static_source: str,
        max_age_s: float = 3600,
        poll_interval_s: float = 300,
        clock: Callable[[], float] = time.time,
        *,
        static_zone: str = "",
        backoff_initial_s: float = 30.0,
        backoff_max_s: float = 3600.0,
        fetch_timeout_s: float = 60.0,
        rng: random.Random | None = None,
    ):
        names = [p.name for p in providers]
        if len(set(names)) != len(names):
            raise ValueError(f"provider names must be unique, got {names}")
        if not (math.isfinite(static_g_per_kwh) and 0 <= static_g_per_kwh <= MAX_PLAUSIBLE_G_PER_KWH):
            raise ValueError(f"static intensity {static_g_per_kwh} gCO2e/kWh is not plausible")
        if min(poll_interval_s, backoff_initial_s, backoff_max_s) <= 0:
            raise ValueError("poll and back-off intervals must be positive")
        self._states = {p.name: _State(p) for p in providers}
        self._static = (float(static_g_per_kwh), static_source, static_zone)
        self._max_age_s = max_age_s
        self._poll_interval_s = poll_interval_s
        self._clock = clock
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._fetch_timeout_s = fetch_timeout_s
        self._rng = rng or random.Random()

    def __repr__(self) -> str:
        return f"IntensityService(providers={list(self._states)}, static={self._static[0]:g} g/kWh)"

    # --- answers, from memory only -----------------------------------------------------------

    def current(self, signal: str = "average") -> Current | None:
        """The intensity to use now. For "average" always an answer (static as the last resort);
        for "marginal" None when no provider has a fresh marginal reading (there is no static
        marginal value)."""
        if signal not in SIGNALS:
            raise ValueError(f"signal must be one of {SIGNALS}")
        got = self._first_fresh(signal, None)
        if got is not None:
            r, age, source = got
            return Current(r.grams_per_kwh, r.provider, r.zone, signal, age, source)
        if signal != "average":
            return None
        value, source, zone = self._static
        return Current(value, STATIC, zone, signal, 0.0, source)

    def fresh(self, zone: str, signal: str = "average") -> tuple[Reading, float, str] | None:
        """The reading of ``zone`` to use now (the first provider's newest one younger than
        max_age), when its provider last answered, and its source; None when there is none (no
        static value: the intensity service answers for many zones, each node has its own)."""
        got = self._first_fresh(signal, zone)
        if got is None:
            return None
        r, _, source = got
        last = self._states[r.provider].last_success
        return r, r.observed_at if last is None else last, source

    def _first_fresh(self, signal: str, zone: str | None) -> tuple[Reading, float, str] | None:
        now = self._clock()
        for st in self._states.values():
            mine = [r for r in st.readings.values() if r.signal == signal and zone in (None, r.zone)]
            if mine:
                r = max(mine, key=lambda r: r.observed_at)
                age = max(0.0, now - r.observed_at)
                if age <= self._max_age_s:
                    return r, age, st.provider.source
        return None

    def readings(self) -> list[Reading]:
        """Every provider's last good reading per (zone, signal), average and marginal alike."""
        return [r for st in self._states.values() for r in st.readings.values()]

    def stats(self) -> dict[str, dict[str, Any]]:
        return {
            name: {
                "up": bool(st.up),
                "successes": st.successes,
                "calls": st.provider.calls,
                "errors": dict(st.errors),
                "failures_in_a_row": st.failures_in_a_row,
                "last_success": st.last_success,
                "last_error": st.last_error,
            }
            for name, st in self._states.items()
        }

    # --- polling ---------------------------------------------------------------------------

    async def run(self, session: aiohttp.ClientSession | None = None) -> None:
        """Poll every provider until cancelled."""
        if session is None:
            async with aiohttp.ClientSession() as own:
                return await self.run(own)
        async with asyncio.TaskGroup() as tasks:
            for st in self._states.values():
                tasks.create_task(self._loop(session, st), name=f"intensity:{st.provider.name}")

    async def poll_once(self, session: aiohttp.ClientSession | None = None) -> None:
        """Poll every provider once, concurrently (start-up, `check`, tests)."""
        if session is None:
            async with aiohttp.ClientSession() as own:
                return await self.poll_once(own)
        await asyncio.gather(*(self._poll(session, st) for st in self._states.values()))

    async def _loop(self, session: aiohttp.ClientSession, st: _State) -> None:
        while True:
            await asyncio.sleep(await self._poll(session, st))

    async def _poll(self, session: aiohttp.ClientSession, st: _State) -> float:
        """One fetch; returns the delay before the next one."""
        try:
            got = await asyncio.wait_for(st.provider.fetch(session), self._fetch_timeout_s)
            if not got:
                raise ProviderError("malformed", "no readings")
        except ProviderError as exc:
            return self._failed(st, exc.kind, str(exc), exc.retry_after_s)
        except TimeoutError:
            return self._failed(st, "timeout", f"fetch took over {self._fetch_timeout_s:g} s", None)
        except Exception as exc:  # an adapter bug must not stop the loop; no message (may echo data)
            return self._failed(st, "internal", type(exc).__name__, None)
        for r in got:
            held = st.readings.get((r.zone, r.signal))
            if held is None or r.observed_at >= held.observed_at:
                st.readings[(r.zone, r.signal)] = r
        st.successes += 1
        st.failures_in_a_row = 0
        st.last_success = self._clock()
        self._set_up(st, True, "")
        return st.provider.poll_interval_s or self._poll_interval_s

    def _failed(self, st: _State, kind: str, detail: str, retry_after_s: float | None) -> float:
        st.errors[kind] += 1
        st.failures_in_a_row += 1
        st.last_error = kind
        self._set_up(st, False, detail)
        initial, ceiling = self._backoff
        delay = min(ceiling, initial * 2 ** min(st.failures_in_a_row - 1, 30))
        delay *= 0.5 + 0.5 * self._rng.random()  # jitter: spread hosts that failed together
        return max(delay, retry_after_s or 0.0)

    def _set_up(self, st: _State, up: bool, detail: str) -> None:
        if st.up is up:
            return
        name = st.provider.name
        if up:
            log.info("intensity provider %s is up%s", name, " again" if st.up is False else "")
        else:
            log.warning("intensity provider %s is failing (%s); retrying with back-off", name, detail)
        st.up = up
