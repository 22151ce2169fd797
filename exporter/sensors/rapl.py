"""CPU/DRAM energy from RAPL through the powercap sysfs tree (``<sysfs>/class/powercap``).

Zones are directories such as ``intel-rapl:0`` (package-0), ``intel-rapl:0:0`` (core),
``intel-rapl:0:1`` (dram), ``intel-rapl:1`` (psys); AMD's driver uses the same layout, and some
hosts add ``intel-rapl-mmio:N`` (a second interface to the same package domain, skipped when the
MSR zone exists). Each zone's ``energy_uj`` counter wraps at its own ``max_energy_range_uj``.

Overlaps are never summed: package ⊃ core/uncore, psys ⊃ package. Node totals use
package + dram where packages exist, else psys. ``energy_uj`` is root-only since CVE-2020-8694.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from .base import CpuZone, MeterSpec, Probe
from .polled import PolledMeter

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger(__name__)

_ZONE_DIR = re.compile(r"^(?P<type>[a-z][a-z-]*rapl[a-z-]*):(?P<ids>\d+(?::\d+)*)$")
_NAME = re.compile(r"^(?P<domain>[a-z]+)(?:-(?P<n>\d+))?$")


@dataclass
class RaplZone:
    zone: str           # directory name, e.g. "intel-rapl:0:1"
    path: str
    domain: str         # package | core | uncore | dram | psys | other name
    socket: str         # "0", "1", … ; "platform" for psys
    max_range_uj: int
    readable: bool
    problem: str = ""   # why it is not readable
    used_in_total: bool = False
    max_power_uw: int = 0  # the largest constraint_N_max_power_uw / _power_limit_uw (0: unknown)

    @property
    def component(self) -> str:
        """The non-overlapping node component this zone counts toward (if used in totals)."""
        return "dram" if self.domain == "dram" else "cpu"


def _read_int(path: str) -> int:
    with open(path, "rb") as fh:
        return int(fh.read().strip())


def _why(e: OSError) -> str:
    if e.errno in (errno.EACCES, errno.EPERM):
        return ("permission denied: energy_uj is readable by root only since CVE-2020-8694 "
                "(Linux 5.10+); run as root, or grant read access with a udev rule")
    if e.errno == errno.ENOENT:
        return "energy_uj is missing"
    return f"{e.strerror or e}"


def discover(sysfs: str) -> tuple[list[RaplZone], str]:
    """The zones under ``<sysfs>/class/powercap`` and, if there are none, why."""
    base = os.path.join(sysfs, "class", "powercap")
    try:
        entries = sorted(os.listdir(base))
    except FileNotFoundError:
        return [], (f"{base} does not exist: the kernel has no powercap/intel_rapl driver loaded, "
                    "or this is a virtual machine (hypervisors do not pass RAPL to guests)")
    except OSError as e:
        return [], f"{base}: {e.strerror}"
    zones: list[RaplZone] = []
    for entry in entries:
        m = _ZONE_DIR.match(entry)
        if not m:
            continue
        zdir = os.path.join(base, entry)
        try:
            with open(os.path.join(zdir, "name")) as fh:
                name = fh.read().strip()
        except OSError:
            continue
        nm = _NAME.match(name)
        domain = nm.group("domain") if nm else name
        ids = m.group("ids").split(":")
        socket = "platform" if domain == "psys" else (nm.group("n") if nm and nm.group("n") else ids[0])
        zone = RaplZone(entry, zdir, domain, socket, 0, True, max_power_uw=_max_power_uw(zdir))
        try:
            zone.max_range_uj = _read_int(os.path.join(zdir, "max_energy_range_uj"))
            _read_int(os.path.join(zdir, "energy_uj"))
        except (OSError, ValueError) as e:
            zone.readable = False
            zone.problem = _why(e) if isinstance(e, OSError) else f"unparseable counter: {e}"
        zones.append(zone)
    # drop MMIO duplicates of an MSR package zone
    msr = {(z.domain, z.socket) for z in zones if z.zone.startswith("intel-rapl:")}
    zones = [z for z in zones if not ("mmio" in z.zone and (z.domain, z.socket) in msr)]
    _select_totals(zones)
    if not zones:
        return [], f"{base} has no RAPL zones (no intel-rapl/amd rapl driver on this kernel)"
    return zones, ""


def _max_power_uw(zdir: str) -> int:
    """The largest power a zone may draw, from its constraints (kernel powercap ABI:
    ``constraint_N_max_power_uw``, else ``constraint_N_power_limit_uw``); 0 when none is readable."""
    best = 0
    for n in range(4):
        for leaf in ("max_power_uw", "power_limit_uw"):
            try:
                best = max(best, _read_int(os.path.join(zdir, f"constraint_{n}_{leaf}")))
            except (OSError, ValueError):
                continue
    return best


PLAUSIBLE_FACTOR = 2.0  # energy implied above this × the zone's largest power constraint is refused


def _select_totals(zones: list[RaplZone]) -> None:
    readable = [z for z in zones if z.readable]
    packages = [z for z in readable if z.domain == "package"]
    chosen = packages + [z for z in readable if z.domain == "dram"] if packages else \
        [z for z in readable if z.domain == "psys"]
    for z in zones:
        z.used_in_total = z in chosen


def wrap_delta(prev: int, cur: int, max_range: int) -> int:
    """Counter delta with wrap-around at ``max_range`` (one wrap at most between reads)."""
    if cur >= prev:
        return cur - prev
    if 0 < prev <= max_range:
        return (max_range - prev) + cur
    return max(0, cur)  # a read beyond the zone's own range: treat as a counter reset


UNKNOWN_MAX_W = 1000.0   # a zone without power constraints: assumed to draw at most this (for wrap timing)
POLL_MIN_S, POLL_MAX_S = 1.0, 60.0
MAX_PENDING_GAPS = 16    # gaps of one zone waiting for a clean interval after them
REDISCOVER_S = 60.0      # how often zones that are missing or unreadable are looked for again


def plausible_max_w(zone: RaplZone) -> float | None:
    """The most power a zone can be believed to draw: PLAUSIBLE_FACTOR × its largest power
    constraint; None when the zone has no constraint to go by."""
    return PLAUSIBLE_FACTOR * zone.max_power_uw / 1e6 if zone.max_power_uw else None


def wrap_period_s(zone: RaplZone) -> float:
    """The shortest time the zone's counter can take to go once round its range."""
    if zone.max_range_uj <= 0:
        return float("inf")
    return zone.max_range_uj / 1e6 / (plausible_max_w(zone) or UNKNOWN_MAX_W)


def poll_interval_s(zones: list[RaplZone]) -> float:
    """Read often enough that no zone can wrap twice between reads: a quarter of the shortest
    wrap period, within [POLL_MIN_S, POLL_MAX_S]."""
    periods = [wrap_period_s(z) for z in zones if z.readable]
    shortest = min(periods, default=float("inf"))
    return max(POLL_MIN_S, min(POLL_MAX_S, shortest / 4))


def gap_wraps(mod_j: float, span_s: float, range_j: float, power_w: float, max_w: float) -> int:
    """Whole wraps hidden in a gap longer than one wrap period: the counter shows only the
    energy modulo its range (``mod_j``), so the number of wraps is the one that brings the
    total nearest the power estimate × the gap, bounded by what the zone can plausibly draw."""
    if range_j <= 0 or span_s <= 0:
        return 0
    most = max(0, math.floor((max_w * span_s - mod_j) / range_j))
    return min(most, max(0, round((power_w * span_s - mod_j) / range_j)))


@dataclass
class _ZoneState:
    value_uj: int
    t: float
    power_w: float | None = None            # over its last unambiguous interval
    gaps: list[tuple[float, float, float | None]] = field(default_factory=list)
    # (mod joules, seconds, power before) of gaps waiting for the power after them


class RaplMeter(PolledMeter):
    """Per-zone energy in joules, wrap-aware.

    Every zone is read at least four times per wrap period (:func:`poll_interval_s`) by a poller
    thread of its own (``start()``), so neither a late sample nor a hung GPU call can let a
    counter go round twice unseen; the sampler's ``measure()`` hands over what was read since
    the last one. A zone that fails keeps its last value and time, so its next good read covers
    the gap. A gap longer than one wrap period (the zone was unreadable) cannot be read back
    exactly: the counter's advance modulo its range is booked, and the whole wraps hidden in
    the gap are estimated from the zone's power before and after it — reported apart, in
    ``CpuReading.estimated`` (``wattprint_cpu_energy_estimated_joules_total``) and a log line,
    never booked as measured and never silently dropped. A decrease that implies more than
    PLAUSIBLE_FACTOR × the zone's largest power constraint is a counter reset, not a wrap: only
    the count since the reset (an exact lower bound) is booked, and ``kind="reset"`` is counted.

    ``clock`` is the meter's time (``time.monotonic`` in the daemon); without one, the time
    passed to ``measure()`` is the only time there is, and there is no poller.
    Missing or unreadable zones are looked for again every REDISCOVER_S."""

    name = "rapl"

    def __init__(self, sysfs: str, clock: Callable[[], float] | None = None) -> None:
        super().__init__(clock, REDISCOVER_S)
        self.sysfs = sysfs
        self.zones, self.problem = discover(sysfs)
        self._state: dict[str, _ZoneState] = {}
        self._zone_list = self._make_zone_list()

    def _make_zone_list(self) -> list[CpuZone]:
        return [CpuZone(z.zone, z.socket, z.domain, "rapl", z.used_in_total, z.readable, z.component)
                for z in self.zones]

    def cpu_zones(self) -> list[CpuZone]:
        """The zones (the same list object until a rediscovery changes them)."""
        return self._zone_list

    def poll_interval(self) -> float:
        return poll_interval_s(self.zones)

    @property
    def usable(self) -> bool:
        return any(z.used_in_total for z in self.zones)

    def read(self) -> tuple[dict[str, float], dict[str, str]]:
        """({zone: joules since last read}, {zone: error kind}) — first read primes, yields 0."""
        reading = self.measure(0.0, None)
        return reading.joules, reading.errors

    # --- reading the zones (under the lock) ----------------------------------------------------
    def _poll(self, now: float) -> None:
        for z in self.zones:
            if not z.readable:
                continue
            try:
                cur = _read_int(os.path.join(z.path, "energy_uj"))
            except OSError as e:
                self._errors[z.zone] = "permission" if e.errno in (errno.EACCES, errno.EPERM) else "read"
                continue
            except ValueError:
                self._errors[z.zone] = "parse"
                continue
            st = self._state.get(z.zone)
            if st is None:
                self._state[z.zone] = _ZoneState(cur, now)
                self._joules.setdefault(z.zone, 0.0)
                continue
            self._step(z, st, cur, now)

    def _step(self, z: RaplZone, st: _ZoneState, cur: int, now: float) -> None:
        span = now - st.t
        mod_j = wrap_delta(st.value_uj, cur, z.max_range_uj) / 1e6
        max_w = plausible_max_w(z)
        booked = mod_j
        if span > wrap_period_s(z):           # the counter may have gone round more than once
            st.gaps.append((mod_j, span, st.power_w))  # priced when the power after it is known
            if len(st.gaps) > MAX_PENDING_GAPS:  # bounded: the oldest is priced on what came before it
                old_mod, old_span, old_before = st.gaps.pop(0)
                self._price_gap(z, (old_mod, old_span, old_before),
                                old_before if old_before is not None else old_mod / old_span)
        elif cur < st.value_uj and max_w is not None and span > 0 and mod_j > max_w * span:
            booked = cur / 1e6                # not a wrap: a reset; the count since it is exact
            self._errors[z.zone] = "reset"
        else:
            if span > 0:
                power = mod_j / span
                for gap in st.gaps:
                    self._price_gap(z, gap, power)
                st.gaps.clear()
                st.power_w = power
        st.value_uj, st.t = cur, now
        self._joules[z.zone] = self._joules.get(z.zone, 0.0) + booked

    def _price_gap(self, z: RaplZone, gap: tuple[float, float, float | None], power_after: float) -> None:
        """Estimate the whole wraps of one gap from the zone's power over the nearest clean
        intervals before and after it (only after, when the gap came first)."""
        mod_j, span, before = gap
        before = power_after if before is None else before
        power = (before + power_after) / 2
        wraps = gap_wraps(mod_j, span, z.max_range_uj / 1e6, power, plausible_max_w(z) or UNKNOWN_MAX_W)
        est = wraps * z.max_range_uj / 1e6
        log.warning("RAPL zone %s was not read for %.0f s, longer than one wrap period (%.0f s): "
                    "%.0f J booked as measured, %d hidden wrap(s) = %.0f J estimated from %.0f W "
                    "before and %.0f W after (wattprint_cpu_energy_estimated_joules_total)",
                    z.zone, span, wrap_period_s(z), mod_j, wraps, est, before, power_after)
        if est > 0:
            self._estimated[z.zone] = self._estimated.get(z.zone, 0.0) + est
            self._errors[z.zone] = "gap_estimated"

    def _rediscover(self, now: float) -> None:
        """Zones that appeared or became readable since the last look are read from now on."""
        self._rediscover_at = now + REDISCOVER_S
        if self.zones and all(z.readable for z in self.zones):
            return
        zones, problem = discover(self.sysfs)
        if [(z.zone, z.readable) for z in zones] == [(z.zone, z.readable) for z in self.zones]:
            return
        log.info("RAPL zones changed: %s", ", ".join(f"{z.zone}{'' if z.readable else ' (unreadable)'}"
                                                    for z in zones) or "none")
        self.zones, self.problem = zones, problem
        self._zone_list = self._make_zone_list()


# --- registry entry ---------------------------------------------------------------------------

def probe(cfg: "Config") -> Probe:
    meter = RaplMeter(cfg.path.sysfs)
    detail = meter.problem
    if not meter.usable and meter.zones:
        detail = "no readable package or psys zone: " + "; ".join(
            sorted({z.problem for z in meter.zones if z.problem}))
    lines = []
    for z in meter.zones:
        state = "readable" if z.readable else f"UNREADABLE: {z.problem}"
        lines.append(f"{z.zone} {z.domain} socket {z.socket}: {state}"
                     + (", in node total" if z.used_in_total else ""))
    advice = []
    if not meter.usable:
        if any("CVE-2020-8694" in z.problem for z in meter.zones):
            advice.append("CPU: run as root (or a udev rule making energy_uj readable) to measure with RAPL; "
                          "until then CPU energy is an estimate (method=\"estimate\").")
        else:
            advice.append("CPU: no RAPL here, so CPU energy is an estimate (method=\"estimate\"); tune it "
                          "with --cpu.estimate-min-watts-per-vcpu / --cpu.estimate-max-watts-per-vcpu.")
    if cfg.cpu.rapl == "off":
        detail = "cpu.rapl=off"
    return Probe("rapl", "cpu", meter.usable and cfg.cpu.rapl != "off",
                 f"RAPL: {'usable' if meter.usable else 'not usable'}" + (f" — {detail}" if detail else ""),
                 lines, {"usable": meter.usable, "detail": detail, "zones": [
                     {"zone": z.zone, "domain": z.domain, "socket": z.socket, "readable": z.readable,
                      "used_in_total": z.used_in_total, "max_energy_range_uj": z.max_range_uj,
                      "problem": z.problem} for z in meter.zones]}, advice)


METER = MeterSpec("rapl", "cpu", "CPU package/DRAM energy counters from the powercap sysfs tree (Intel, AMD)",
                  auto=True, open=lambda cfg: RaplMeter(cfg.path.sysfs, clock=time.monotonic), probe=probe,
                  usable=lambda meter: meter.usable)
