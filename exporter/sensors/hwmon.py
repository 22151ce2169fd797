"""CPU energy from hwmon power and energy sensors (``<sysfs>/class/hwmon/hwmon*``): for hosts
without RAPL — NVIDIA Grace (GH200/GB200, Grace CPU Superchip) and other Arm servers, AMD hosts
with the ``amd_energy`` driver, x86 servers with an ACPI 4.0 power meter.

The interface, as upstream documents it (each fact below is what the code relies on):

* Linux ``Documentation/hwmon/sysfs-interface.rst`` (torvalds/linux 2555693d): ``name`` is the
  chip name, the only mandatory attribute; ``energy[1-*]_input`` is cumulative energy in µJ;
  ``power[1-*]_input`` instantaneous and ``power[1-*]_average`` average power in µW,
  ``power[1-*]_average_interval`` its averaging window in ms; ``*_label`` a suggested label; a
  disabled sensor reads ``-ENODATA``. Drivers may put the attributes in ``hwmonN/`` or in its
  parent ``hwmonN/device/`` (libsensors reads both), so both are looked in.
* ``drivers/hwmon/acpi_power_meter.c`` (torvalds/linux 00f4095c) and
  ``Documentation/hwmon/acpi_power_meter.rst``: chip ``power_meter`` (ACPI000D), attributes on the
  ACPI device (``hwmonN/device/``): ``power1_average`` (µW: the ACPI mW × 1000),
  ``power1_average_interval`` (ms), ``power1_oem_info`` (an arbitrary string from firmware) and a
  ``measures/`` directory of links to the devices the meter measures.
* NVIDIA Grace: one ACPI power meter per rail and socket, ``power1_oem_info`` =
  ``"<Module|Grace|CPU|SysIO> Power Socket <N>"`` (NVIDIA Grace Performance Tuning Guide, "Power
  Telemetry"; the same strings in alumet-dev/alumet plugin-grace-hopper). Module is the whole
  superchip module (on Grace Hopper: the Hopper GPU and its HBM too), Grace the Grace socket (CPU
  rail, SOC rail and its LPDDR5X memory), CPU the CPU rail, SysIO the SOC rail.
* ``Documentation/hwmon/amd_energy.rst`` (torvalds/linux 2313f470; driver labels ``Ecore%03u`` and
  ``Esocket%u``): ``energyN_input`` µJ per core (``Ecore``) and per socket (``Esocket``), readable
  by root only since CVE-2020-12912.

Overlaps are never summed: module ⊇ grace ⊇ cpu, sysio; socket ⊇ its cores. Per socket the node
total takes the widest set that measures the CPU without anything else: Grace's socket sensor,
else its CPU + SysIO rails; AMD's Esocket sensors, else the Ecore ones. A Grace module sensor and
a whole-system ACPI power meter are exported but never in the totals (they hold GPUs, fans, disks:
energy the GPU meter already counts, or that is no CPU's). Energy counters are preferred; a
power-only sensor is integrated (trapezoid) by a poller thread, see :class:`HwmonMeter`.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .base import CpuZone, MeterSpec, Probe
from .polled import PolledMeter

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Known:
    """One row of the table of known sensors: a chip name and a label pattern → a domain."""
    platform: str
    chip: str
    label: str          # regular expression on the sensor's label; group "socket" when it has one
    domain: str
    in_total: str       # when the sensor counts in the node totals
    note: str
    aliases: str = ""   # other chip names (a regular expression) that carry the same sensors


_GRACE_CHIPS = r"grace\w*|nvidia_grace\w*"   # a vendor or out-of-tree driver's own chip name


KNOWN: tuple[Known, ...] = (
    Known("NVIDIA Grace", "power_meter", r"Module Power Socket (?P<socket>\d+)", "module", "never",
          "whole superchip module; on Grace Hopper also the GPU and HBM that NVML counts", _GRACE_CHIPS),
    Known("NVIDIA Grace", "power_meter", r"Grace Power Socket (?P<socket>\d+)", "grace", "yes",
          "Grace socket: CPU rail + SOC rail + LPDDR5X memory", _GRACE_CHIPS),
    Known("NVIDIA Grace", "power_meter", r"CPU Power Socket (?P<socket>\d+)", "cpu",
          "when the socket has no Grace sensor", "CPU rail (cores), inside the Grace sensor", _GRACE_CHIPS),
    Known("NVIDIA Grace", "power_meter", r"SysIO Power Socket (?P<socket>\d+)", "sysio",
          "when the socket has no Grace sensor", "SOC rail (fabric, I/O), inside the Grace sensor", _GRACE_CHIPS),
    Known("AMD (amd_energy)", "amd_energy", r"Esocket(?P<socket>\d+)", "package", "yes",
          "socket energy counter"),
    Known("AMD (amd_energy)", "amd_energy", r"Ecore(?P<core>\d+)", "core",
          "when there is no readable Esocket", "core energy counter, inside its socket's"),
    Known("ACPI power meter", "power_meter", r".*", "platform", "never",
          "ACPI 4.0 meter of the whole system (GPUs, fans, disks…), unless its measures/ names "
          "processors only: then domain package, in the totals unless another meter in them "
          "already covers one of its processors"),
)


def markdown_table() -> str:
    """The README's table of known sensors (scripts/update_readme.py)."""
    rows = ["| Platform | hwmon `name` | Label (`*_label` / `power1_oem_info`) | `domain` | In node totals | What it measures |",
            "|---|---|---|---|---|---|"]
    for k in KNOWN:
        label = k.label.replace("(?P<socket>\\d+)", "N").replace("(?P<core>\\d+)", "NNN")
        label = "any other" if label == ".*" else f"`{label}`"
        chip = f"`{k.chip}`" + (" (or a chip named `grace*`)" if k.aliases else "")
        rows.append(f"| {k.platform} | {chip} | {label} | {k.domain} | {k.in_total} | {k.note} |")
    return "\n".join(rows) + "\n"


@dataclass
class HwmonSensor:
    zone: str           # "hwmon3/power1": the hwmon directory and the channel
    chip: str           # the hwmon ``name``
    label: str
    kind: str           # "energy" (a µJ counter) | "power" (µW, integrated)
    path: str           # the file that is read
    domain: str
    socket: str
    readable: bool = True
    problem: str = ""
    used_in_total: bool = False
    interval_s: float = 0.0   # power: the sensor's own averaging window (0: unknown)
    measures: frozenset[str] = frozenset()   # ACPI power meter: the devices it measures
    duplicate_of: str = ""    # the zone of a sensor measuring the same thing: this one is never read

    @property
    def method(self) -> str:
        return "energy counter" if self.kind == "energy" else "power integrated"


def _read_text(path: str) -> str:
    """A string attribute, whitespace stripped; bytes that are not UTF-8 (``power1_oem_info`` is
    whatever the firmware wrote) become U+FFFD rather than an exception."""
    with open(path, "rb") as fh:
        return fh.read(4096).decode("utf-8", "replace").strip()


_INT = re.compile(rb"-?[0-9]+")


def _read_int(path: str) -> int:
    """A sysfs integer ("%ld\\n"); anything else (empty, trailing garbage) is a ValueError."""
    with open(path, "rb") as fh:
        raw = fh.read(64).strip()
    if not _INT.fullmatch(raw):
        raise ValueError(f"not an integer: {raw[:32]!r}")
    return int(raw)


# errors a sysfs read() returns for a moment (a firmware/bus timeout, a busy EC): the sensor stays
# in use, each failed read is counted and the next good one covers the gap
_TRANSIENT = {errno.EIO, errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT, errno.EINTR}


def _attr(hdir: str, name: str) -> str | None:
    """The path of an attribute in ``hwmonN/`` or its ``device/`` parent, None when in neither."""
    for d in (hdir, os.path.join(hdir, "device")):
        p = os.path.join(d, name)
        if os.path.isfile(p):
            return p
    return None


def _why(e: OSError) -> str:
    if e.errno in (errno.EACCES, errno.EPERM):
        return ("permission denied: run as root (amd_energy's energyN_input is readable by root only "
                "since CVE-2020-12912)")
    if e.errno == errno.ENODATA:
        return "the sensor is disabled (ENODATA): enable it with its *_enable attribute"
    if e.errno == errno.ENOENT:
        return "the attribute vanished"
    return f"{e.strerror or e}"


_CHANNEL = re.compile(r"^(?P<type>energy|power)(?P<n>\d+)_(?P<item>input|average)$")


def _classify(chip: str, label: str, measures: frozenset[str]) -> tuple[str, str] | None:
    """(domain, socket) from the table of known sensors; None for a sensor it does not know."""
    for k in KNOWN:
        if k.chip != chip and not (k.aliases and re.fullmatch(k.aliases, chip)):
            continue
        m = re.fullmatch(k.label, label.strip(), re.IGNORECASE)
        if not m:
            continue
        if k.domain == "platform":
            return ("package", "all") if _processors_only(measures) else ("platform", "platform")
        return k.domain, m.groupdict().get("socket") or "all"
    return None


def _measures(hdir: str) -> frozenset[str]:
    """The devices an ACPI power meter measures: the names of its ``measures/`` links."""
    try:
        return frozenset(os.listdir(os.path.join(hdir, "device", "measures")))
    except OSError:
        return frozenset()


def _processors_only(measures: frozenset[str]) -> bool:
    """Whether the links name processor devices only (ACPI0007 or LNXCPU, the ACPI processor ids)."""
    return bool(measures) and all(n.startswith(("ACPI0007:", "LNXCPU:")) for n in measures)


def discover(sysfs: str) -> tuple[list[HwmonSensor], str]:
    """The known power/energy sensors under ``<sysfs>/class/hwmon`` and, if there are none, why."""
    base = os.path.join(sysfs, "class", "hwmon")
    try:
        entries = sorted(os.listdir(base), key=lambda e: (len(e), e))
    except FileNotFoundError:
        return [], f"{base} does not exist (no hwmon drivers loaded, or sysfs is not mounted there)"
    except OSError as e:
        return [], f"{base}: {e.strerror}"
    sensors: list[HwmonSensor] = []
    chips: list[str] = []
    for entry in entries:
        hdir = os.path.join(base, entry)
        name_path = _attr(hdir, "name")
        if name_path is None:
            continue
        try:
            chip = _read_text(name_path)
        except OSError:
            continue
        chips.append(chip)
        measures = _measures(hdir) if chip == "power_meter" else frozenset()
        channels: dict[tuple[str, str], str] = {}   # (type, n) -> the attribute read
        for d in (hdir, os.path.join(hdir, "device")):
            try:
                names = os.listdir(d)
            except OSError:
                continue
            for fname in names:
                m = _CHANNEL.match(fname)
                if m is None:
                    continue
                key = (m.group("type"), m.group("n"))
                # power: the average (what ACPI meters have) before the instantaneous input
                if key not in channels or (m.group("item") == "average" and channels[key].endswith("_input")):
                    channels[key] = os.path.join(d, fname)
        energy_ns = {n for t, n in channels if t == "energy"}
        for (typ, n), path in sorted(channels.items()):
            label = _label(hdir, typ, n)
            known = _classify(chip, label, measures)
            if known is None:
                continue
            domain, socket = known
            if typ == "power" and any(_label(hdir, "energy", e) == label for e in energy_ns):
                continue  # the same sensor has an energy counter: preferred, never both
            s = HwmonSensor(f"{entry}/{typ}{n}", chip, label, typ, path, domain, socket, measures=measures)
            if typ == "power":
                s.interval_s = _interval_s(hdir, n)
            try:
                _read_int(path)
            except OSError as e:
                if e.errno in _TRANSIENT:
                    s.problem = f"failed a read ({_why(e)}): kept, each failed read is counted"
                else:
                    s.readable, s.problem = False, _why(e)
            except ValueError as e:
                s.readable, s.problem = False, f"unparseable value: {e}"
            sensors.append(s)
    _mark_duplicates(sensors)
    _select_totals(sensors)
    if not sensors:
        seen = ", ".join(sorted(set(chips))) or "none"
        return [], (f"{base} has no known power or energy sensor (chips: {seen}; known: "
                    + ", ".join(sorted({k.chip for k in KNOWN})) + ")")
    return sensors, ""


def _label(hdir: str, typ: str, n: str) -> str:
    for leaf in (f"{typ}{n}_label", f"{typ}{n}_oem_info"):
        p = _attr(hdir, leaf)
        if p is not None:
            try:
                return _read_text(p)
            except OSError:
                continue
    return ""


def _interval_s(hdir: str, n: str) -> float:
    p = _attr(hdir, f"power{n}_average_interval")
    try:
        return _read_int(p) / 1000.0 if p else 0.0
    except (OSError, ValueError):
        return 0.0


def _mark_duplicates(sensors: list[HwmonSensor]) -> None:
    """Sensors that measure the same thing (two chips with the same Grace or amd_energy label: a
    vendor driver next to the ACPI meters; an ACPI meter of processors another meter of the same
    series already measures) would book the same joules twice into one
    ``{socket, domain}`` series: the first (readable) one is read, the others are listed with
    ``duplicate_of`` and never read. Whole-system meters are distinct meters and all kept."""
    seen: dict[tuple[str, str, str], HwmonSensor] = {}
    covered: list[HwmonSensor] = []
    order = sorted(sensors, key=lambda s: (not s.readable, -len(s.measures)))  # widest meter first
    for s in order:
        if s.domain == "platform":
            continue
        if s.chip == "power_meter" and s.domain == "package":   # ACPI meter of the processors
            over = next((c for c in covered if c.measures & s.measures), None)
            if over is not None:
                s.duplicate_of = over.zone
            else:
                covered.append(s)
            continue
        key = (s.domain, s.socket, s.label.strip().lower())
        if key in seen:
            s.duplicate_of = seen[key].zone
        else:
            seen[key] = s


def _select_totals(sensors: list[HwmonSensor]) -> None:
    """The widest non-overlapping set that measures the CPU: per Grace socket its Grace sensor,
    else its CPU and SysIO rails; AMD's Esocket sensors, else its Ecore ones; else the ACPI
    meters of the processors (they overlap the others). Module and whole-system meters never,
    duplicates never."""
    ok = [s for s in sensors if s.readable and not s.duplicate_of]
    chosen: list[HwmonSensor] = [s for s in ok if s.domain == "package" and s.chip == "amd_energy"]
    grace_sockets = {s.socket for s in ok if s.domain == "grace"}
    for s in ok:
        if s.domain == "grace" or (s.domain in ("cpu", "sysio") and s.socket not in grace_sockets):
            chosen.append(s)
    if not any(s.chip == "amd_energy" and s.domain == "package" for s in chosen):
        chosen += [s for s in ok if s.chip == "amd_energy" and s.domain == "core"]
    if not chosen:  # an ACPI meter of the processors measures what amd_energy or Grace sensors do
        chosen = [s for s in ok if s.domain == "package" and s.chip == "power_meter"]
    for s in sensors:
        s.used_in_total = s in chosen


def _wrapped(prev: int, cur: int, span: float, power_w: float | None, limit_w: float) -> int | None:
    """The µJ count of a counter that went from ``prev`` to ``cur`` by wrapping at the power of two
    just above ``prev`` (amd_energy wraps at 2^(64 - ESU) µJ, a plain 64-bit count at 2^63), or
    None when that is not what happened (a reset: a driver reload restarts near 0). A wrap is
    taken only when the count it gives is what the sensor's power before predicts (at most 4× its
    last interval's power + 10 W, and under ``limit_w``): a reset from a value that happens to lie
    that close below a power of two is a one in 10^4 chance, a wrap that does not is none."""
    m = prev.bit_length()
    if m < 32 or power_w is None:
        return None
    delta = cur + (1 << m) - prev
    if 0 <= delta / 1e6 <= min(limit_w, 4 * power_w + 10.0) * max(span, 1.0):
        return delta
    return None


def trapezoid_j(p0_w: float, p1_w: float, span_s: float) -> float:
    """Energy between two power readings. When the power moves monotonically between them the
    error is at most ``bound_j``: half the change times the span."""
    return (p0_w + p1_w) / 2 * max(0.0, span_s)


def bound_j(p0_w: float, p1_w: float, span_s: float) -> float:
    return abs(p1_w - p0_w) / 2 * max(0.0, span_s)


POLL_S = 1.0            # power sensors are read this often (or at their averaging window, if longer)
POLL_MAX_S = 10.0
MAX_GAP_S = 30.0        # a power sensor unread for longer: the gap is estimated, not measured
REDISCOVER_S = 60.0

# far above anything one sensor of the domain measures (a Grace socket draws ≈ 0.5 kW, a GB200
# superchip module ≈ 2.7 kW, an 8-GPU server ≈ 14 kW): a reading above it is a glitch (a firmware
# 0xFFFF…, a corrupted register), counted as kind="implausible" and never booked
MAX_W = {"module": 20_000.0, "platform": 200_000.0}
MAX_CPU_W = 5_000.0


def max_w(domain: str) -> float:
    return MAX_W.get(domain, MAX_CPU_W)


def poll_interval_s(sensors: list[HwmonSensor]) -> float:
    """POLL_S, or the shortest averaging window of the power sensors when longer (reading more
    often only repeats a value); POLL_MAX_S with energy counters alone (amd_energy accumulates
    its 32-bit registers into 64-bit counters itself)."""
    power = [s for s in sensors if s.kind == "power" and s.readable]
    if not power:
        return POLL_MAX_S
    windows = [s.interval_s for s in power if s.interval_s > 0]
    return min(POLL_MAX_S, max(POLL_S, min(windows, default=POLL_S)))


@dataclass
class _State:
    value: int          # µJ (energy) or µW (power) at the last good read
    t: float
    power_w: float | None = None   # energy sensors: over the last interval (to bridge a reset)


class HwmonMeter(PolledMeter):
    """Per-sensor energy in joules since the previous measure.

    An energy counter is read as a delta; one that goes backwards was reset (a driver reload):
    that interval's count cannot be known, so nothing is booked as measured and the sensor's
    power over its previous interval × the interval is booked as estimated
    (``wattprint_cpu_energy_estimated_joules_total``, ``kind="reset"`` counted). A power sensor is
    read by a poller thread every :func:`poll_interval_s` and integrated with the trapezoid rule;
    each interval's error is at most ``|P1 − P0| / 2 × Δt`` when the power moves monotonically
    between the two reads, and ``power1_average`` is itself an average over the sensor's own
    window, so a spike between reads is not lost. A sensor that fails to read keeps its last value
    and time (``kind=read|permission|parse`` counted, that zone only): the next good read covers
    the gap — an energy counter exactly; a power sensor by the trapezoid when the gap is at most
    MAX_GAP_S, else booked as estimated (``kind="gap_estimated"``), never as measured. A power
    above :func:`max_w` is not booked (``kind="implausible"``, the next good read covers the gap);
    an energy jump above it is not booked either, its interval estimated as after a reset; a
    counter that wraps (:func:`_wrapped`) is measured."""

    name = "hwmon"

    def __init__(self, sysfs: str, clock: Callable[[], float] | None = None) -> None:
        super().__init__(clock, REDISCOVER_S)
        self.sysfs = sysfs
        self.sensors, self.problem = discover(sysfs)
        self._state: dict[str, _State] = {}
        self._implausible_logged: set[str] = set()
        self._zone_list = self._make_zone_list()

    def _make_zone_list(self) -> list[CpuZone]:
        return [CpuZone(s.zone, s.socket, s.domain, "hwmon", s.used_in_total, s.readable, "cpu")
                for s in self.sensors]

    def cpu_zones(self) -> list[CpuZone]:
        return self._zone_list

    def poll_interval(self) -> float:
        return poll_interval_s(self.sensors)

    @property
    def usable(self) -> bool:
        return any(s.used_in_total for s in self.sensors)

    # --- reading (under the lock) -------------------------------------------------------------
    def _poll(self, now: float) -> None:
        for s in self.sensors:
            if not s.readable or s.duplicate_of:
                continue
            try:
                cur = _read_int(s.path)
            except OSError as e:
                self._errors[s.zone] = "permission" if e.errno in (errno.EACCES, errno.EPERM) else "read"
                if e.errno in (errno.ENOENT, errno.ENODEV) and s.used_in_total and not os.path.lexists(
                        os.path.join(self.sysfs, "class", "hwmon", s.zone.split("/")[0])):
                    self._rediscover_at = now  # its hwmonN is gone (unbound): look again next measure
                continue
            except ValueError:
                self._errors[s.zone] = "parse"
                continue
            if cur < 0:
                self._errors[s.zone] = "parse"  # a negative power or energy count is no reading
                continue
            if s.kind == "power" and cur / 1e6 > max_w(s.domain):
                self._implausible(s, f"{cur} µW")
                continue  # kept: the next good read covers the gap, as after a failed read
            self._implausible_logged.discard(s.zone)
            st = self._state.get(s.zone)
            if st is None:
                self._state[s.zone] = _State(cur, now)
                self._joules.setdefault(s.zone, 0.0)
                continue
            span = now - st.t
            if s.kind == "energy":
                self._step_energy(s, st, cur, span)
            else:
                self._step_power(s, st, cur, span)
            st.value, st.t = cur, now

    def _book(self, into: dict[str, float], zone: str, j: float) -> None:
        into[zone] = into.get(zone, 0.0) + j

    def _implausible(self, s: HwmonSensor, what: str) -> None:
        self._errors[s.zone] = "implausible"
        if s.zone in self._implausible_logged:   # counted at every read, logged once a run of them
            return
        self._implausible_logged.add(s.zone)
        log.warning("hwmon sensor %s (%s %r): %s is above %.0f W, more than any %s sensor measures: "
                    "not booked (kind=\"implausible\")", s.zone, s.chip, s.label, what, max_w(s.domain),
                    s.domain)

    def _step_energy(self, s: HwmonSensor, st: _State, cur: int, span: float) -> None:
        delta = cur - st.value
        if delta < 0 and (wrap := _wrapped(st.value, cur, span, st.power_w, max_w(s.domain))) is not None:
            delta = wrap  # the driver's µJ value wrapped (amd_energy: at 2^(64 - ESU) µJ)
        if delta >= 0:
            j = delta / 1e6
            if j > max_w(s.domain) * max(span, 1.0):
                # a jump no CPU makes: not booked; its power before × the interval is estimated
                self._implausible(s, f"{j:.0f} J in {span:.1f} s")
                self._estimate_interval(s, st, span)
                return
            self._book(self._joules, s.zone, j)
            if span > 0:
                st.power_w = j / span
            return
        est = self._estimate_interval(s, st, span)
        log.warning("hwmon sensor %s (%s %r): energy counter went backwards (%d → %d µJ), a reset: "
                    "%.1f J estimated for the %.0f s interval from its power before "
                    "(wattprint_cpu_energy_estimated_joules_total)", s.zone, s.chip, s.label, st.value,
                    cur, est, span)
        self._errors[s.zone] = "reset"

    def _estimate_interval(self, s: HwmonSensor, st: _State, span: float) -> float:
        """An interval whose count is unknown: nothing measured, its power before × span estimated."""
        est = (st.power_w or 0.0) * max(0.0, span)
        self._book(self._joules, s.zone, 0.0)
        if est > 0:
            self._book(self._estimated, s.zone, est)
        return est

    def _step_power(self, s: HwmonSensor, st: _State, cur: int, span: float) -> None:
        j = trapezoid_j(st.value / 1e6, cur / 1e6, span)
        if span <= MAX_GAP_S:
            self._book(self._joules, s.zone, j)
            return
        log.warning("hwmon power sensor %s (%s %r) was not read for %.0f s (more than %.0f s): "
                    "%.1f J estimated by the trapezoid over the gap, not booked as measured "
                    "(wattprint_cpu_energy_estimated_joules_total)", s.zone, s.chip, s.label, span,
                    MAX_GAP_S, j)
        self._book(self._joules, s.zone, 0.0)
        self._book(self._estimated, s.zone, j)
        self._errors[s.zone] = "gap_estimated"

    def _rediscover(self, now: float) -> None:
        """Every REDISCOVER_S, even when every sensor reads: a driver unbound (its hwmonN gone, or
        back under another number) or loaded later (modprobe amd_energy) changes the set. A zone
        no longer read loses its last value: should it come back, its first read primes again
        (its gap was measured by the sensors that stood in for it, never estimated twice)."""
        self._rediscover_at = now + REDISCOVER_S
        sensors, problem = discover(self.sysfs)
        key = [(s.zone, s.path, s.readable, s.used_in_total, s.duplicate_of) for s in sensors]
        if key == [(s.zone, s.path, s.readable, s.used_in_total, s.duplicate_of) for s in self.sensors]:
            return
        read = {s.zone for s in sensors if s.readable and not s.duplicate_of}
        for zone in [z for z in self._state if z not in read]:
            del self._state[zone]
        log.info("hwmon sensors changed: %s", ", ".join(
            f"{s.zone} {s.label!r}{'' if s.readable else ' (unreadable)'}" for s in sensors) or "none")
        self.sensors, self.problem = sensors, problem
        self._zone_list = self._make_zone_list()


# --- registry entry ---------------------------------------------------------------------------

def describe(s: HwmonSensor) -> str:
    state = "readable" if s.readable else f"UNREADABLE: {s.problem}"
    if s.duplicate_of:
        state = f"the same sensor as {s.duplicate_of}: never read, never summed"
    elif s.readable and s.problem:
        state += f" ({s.problem})"
    what = f"{os.path.basename(s.path)} ({'µJ counter' if s.kind == 'energy' else 'µW, integrated'})"
    return (f"{s.zone} {s.chip} {s.label or '(no label)'!r}: domain {s.domain}, socket {s.socket}, "
            f"{what}: {state}" + (", in node total" if s.used_in_total else ", not in totals"))


def probe(cfg: "Config") -> Probe:
    meter = HwmonMeter(cfg.path.sysfs)
    detail = meter.problem
    if not meter.usable and meter.sensors:
        problems = sorted({s.problem for s in meter.sensors if s.problem})
        detail = ("no readable sensor that measures the CPU alone (" + ", ".join(
            sorted({f"{s.domain}" for s in meter.sensors})) + " found, never summed into the CPU)"
                  + (": " + "; ".join(problems) if problems else ""))
    used = [s for s in meter.sensors if s.used_in_total]
    methods = sorted({s.method for s in used})
    headline = ("hwmon: usable — " + ", ".join(f"{s.domain} socket {s.socket}" for s in used)
                + f" in the node total ({', '.join(methods)})") if meter.usable else \
        f"hwmon: not usable — {detail}"
    advice = []
    if not meter.usable and any("root" in s.problem for s in meter.sensors):
        advice.append("CPU: run as root to read the hwmon energy counters (amd_energy, CVE-2020-12912).")
    return Probe("hwmon", "cpu", meter.usable, headline, [describe(s) for s in meter.sensors],
                 {"usable": meter.usable, "detail": detail, "method": ", ".join(methods),
                  "sensors": [{"zone": s.zone, "chip": s.chip, "label": s.label, "kind": s.kind,
                               "method": s.method, "domain": s.domain, "socket": s.socket,
                               "readable": s.readable, "used_in_total": s.used_in_total,
                               "problem": s.problem, "path": s.path, "duplicate_of": s.duplicate_of}
                              for s in meter.sensors]}, advice)


METER = MeterSpec("hwmon", "cpu", "CPU energy from hwmon power/energy sensors (NVIDIA Grace ACPI power "
                  "meters, amd_energy, ACPI power meters of the processors)",
                  auto=True, open=lambda cfg: HwmonMeter(cfg.path.sysfs, clock=time.monotonic), probe=probe,
                  usable=lambda meter: meter.usable)
