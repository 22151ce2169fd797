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
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .base import CpuReading, CpuZone, MeterSpec, Probe

if TYPE_CHECKING:
    from ..config import Config

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


class RaplMeter:
    """Per-zone energy deltas in joules, wrap-aware; a zone that fails keeps its last value, so
    the next good read carries the energy of the gap (nothing is lost unless it wrapped twice)."""

    name = "rapl"

    def __init__(self, sysfs: str) -> None:
        self.zones, self.problem = discover(sysfs)
        self._last: dict[str, int] = {}
        self._span: dict[str, float] = {}  # seconds since each zone's last good read (before this one)

    def cpu_zones(self) -> list[CpuZone]:
        return [CpuZone(z.zone, z.socket, z.domain, "rapl", z.used_in_total, z.readable, z.component)
                for z in self.zones]

    def measure(self, dt_s: float, busy_ratio: float | None) -> CpuReading:
        """Per-zone joules since the last read. A decrease that implies more than
        PLAUSIBLE_FACTOR × the zone's largest power constraint over the time since its last good
        read is not a wrap but a counter reset: only the counter's count since the reset (an
        exact lower bound) is booked, and ``kind="reset"`` is counted."""
        before = dict(self._last)
        deltas, errors = self.read()
        for z in self.zones:
            span = self._span.get(z.zone, 0.0) + dt_s
            if z.zone in errors or z.zone not in deltas:
                self._span[z.zone] = span  # the next good read covers this time too
                continue
            self._span[z.zone] = 0.0
            prev, cur = before.get(z.zone), self._last.get(z.zone)
            if z.max_power_uw and prev is not None and cur is not None and cur < prev and span > 0:
                if deltas[z.zone] > PLAUSIBLE_FACTOR * z.max_power_uw / 1e6 * span:
                    deltas[z.zone] = cur / 1e6
                    errors[z.zone] = "reset"
        return CpuReading(deltas, errors)

    def checkpoint(self) -> Any:
        return dict(self._last), dict(self._span)

    def restore(self, checkpoint: Any) -> None:
        last, span = checkpoint
        self._last, self._span = dict(last), dict(span)

    @property
    def usable(self) -> bool:
        return any(z.used_in_total for z in self.zones)

    def read(self) -> tuple[dict[str, float], dict[str, str]]:
        """({zone: joules since last read}, {zone: error kind}) — first read primes, yields 0."""
        deltas: dict[str, float] = {}
        errors: dict[str, str] = {}
        for z in self.zones:
            if not z.readable:
                continue
            try:
                cur = _read_int(os.path.join(z.path, "energy_uj"))
            except OSError as e:
                errors[z.zone] = "permission" if e.errno in (errno.EACCES, errno.EPERM) else "read"
                continue
            except ValueError:
                errors[z.zone] = "parse"
                continue
            prev = self._last.get(z.zone)
            self._last[z.zone] = cur
            deltas[z.zone] = 0.0 if prev is None else wrap_delta(prev, cur, z.max_range_uj) / 1e6
        return deltas, errors


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
                  auto=True, open=lambda cfg: RaplMeter(cfg.path.sysfs), probe=probe,
                  usable=lambda meter: meter.usable)
