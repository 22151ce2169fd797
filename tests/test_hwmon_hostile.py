"""The hwmon CPU meter against the shapes real sysfs trees and drivers produce that the first
tests (tests/test_hwmon.py) did not: duplicate sensors on two chips, read-time errnos, garbage and
absurd values, counters that wrap, hwmon devices that come and go, a host sysfs mounted elsewhere.

Layout as the kernel makes it (drivers/hwmon/hwmon.c __hwmon_device_register, torvalds/linux
v6.8: ``device_register`` of class "hwmon" under the parent device, so the attributes live in
``/sys/devices/<parent>/hwmon/hwmonN/`` and ``/sys/class/hwmon/hwmonN`` is a relative symlink to
it; ``hwmonN/device`` a link back to the parent). A sysfs ``show()`` that returns ``-EIO`` (an
ACPI/EC timeout), ``-ENODATA`` or ``-EAGAIN`` makes that ``read()`` fail with the errno, while
the file still exists. amd_energy (drivers/hwmon/amd_energy.c, torvalds/linux 49ab19a4,
amd_add_delta): ``*val = div64_ul(input * 1000000UL, BIT(energy_units))`` with ``input`` the u64
accumulated count, so the µJ value wraps at 2^(64 − ESU) µJ — 2^48 µJ (≈ 281 MJ, 13 days at
250 W) with the usual ESU of 16.
"""

from __future__ import annotations

import builtins
import errno
import os
from pathlib import Path

import pytest

from exporter.sensors import hwmon
from exporter.sensors.hwmon import HwmonMeter, discover
from test_hwmon import amd_node, grace_node, make_acpi_meter, write


def make_linked_chip(sysfs: Path, n: int, chip: str, attrs: dict[str, str],
                     parent: str = "devices/platform/grace_hwmon.0") -> Path:
    """A hwmon device as the hwmon core registers it: its files in ``devices/<parent>/hwmon/hwmonN``
    and ``class/hwmon/hwmonN`` a relative symlink there (the real /sys layout)."""
    hdir = sysfs / parent / "hwmon" / f"hwmon{n}"
    hdir.mkdir(parents=True)
    (hdir / "name").write_text(chip + "\n")
    (hdir / "device").symlink_to("../..")
    for leaf, value in attrs.items():
        (hdir / leaf).write_text(value + "\n")
    cls = sysfs / "class" / "hwmon"
    cls.mkdir(parents=True, exist_ok=True)
    (cls / f"hwmon{n}").symlink_to(os.path.relpath(hdir, cls))
    return hdir


def grace_driver_chip(sysfs: Path, n: int, sockets: int = 2) -> Path:
    """A vendor Grace driver next to the ACPI meters: the same rails, the same labels."""
    attrs, i = {}, 1
    for socket in range(sockets):
        for kind, watts in (("Module", 600), ("Grace", 250), ("CPU", 180), ("SysIO", 40)):
            attrs[f"power{i}_input"] = str((watts + socket) * 1_000_000)
            attrs[f"power{i}_label"] = f"{kind} Power Socket {socket}"
            i += 1
    return make_linked_chip(sysfs, n, "grace_hwmon", attrs)


def total(meter: HwmonMeter, joules: dict[str, float]) -> float:
    return sum(joules.get(s.zone, 0.0) for s in meter.sensors if s.used_in_total)


def series(meter: HwmonMeter, joules: dict[str, float]) -> dict[tuple[str, str], float]:
    """What the CPU stage books: one series per (socket, domain), zones summed into it."""
    out: dict[tuple[str, str], float] = {}
    for s in meter.sensors:
        out[(s.socket, s.domain)] = out.get((s.socket, s.domain), 0.0) + joules.get(s.zone, 0.0)
    return out


# --- duplicates: never summed twice -------------------------------------------------------------

def test_two_chips_with_the_same_grace_labels_are_summed_once(tmp_path):
    sysfs = tmp_path / "sys"
    grace_node(sysfs)                    # ACPI meters hwmon0..7
    grace_driver_chip(sysfs, 8)          # the same rails again, through a driver of its own
    meter = HwmonMeter(str(sysfs))
    used = [(s.chip, s.domain, s.socket) for s in meter.sensors if s.used_in_total]
    assert sorted(used) == [("power_meter", "grace", "0"), ("power_meter", "grace", "1")]
    dups = [s for s in meter.sensors if s.chip == "grace_hwmon"]
    assert len(dups) == 8 and all(s.duplicate_of.startswith("hwmon") and not s.used_in_total for s in dups)
    meter.measure(0.0, None)
    r = meter.measure(2.0, None)
    assert total(meter, r.joules) == pytest.approx((250 + 251) * 2)
    got = series(meter, r.joules)
    assert got[("0", "grace")] == pytest.approx(500.0) and got[("1", "module")] == pytest.approx(601 * 2)
    assert not any(s.zone in r.joules for s in dups)     # never read
    assert "never read, never summed" in hwmon.describe(dups[0])


def test_two_amd_energy_chips_with_the_same_labels_are_summed_once(tmp_path):
    sysfs = tmp_path / "sys"
    amd_node(sysfs)
    attrs = {}
    for i, label in enumerate(["Ecore000", "Esocket0"], 1):
        attrs[f"energy{i}_input"], attrs[f"energy{i}_label"] = "1000000", label
    make_linked_chip(sysfs, 7, "amd_energy", attrs, parent="devices/platform/amd_energy.1")
    sensors, _ = discover(str(sysfs))
    assert [s.label for s in sensors if s.used_in_total] == ["Esocket0", "Esocket1"]
    assert {s.label for s in sensors if s.duplicate_of} == {"Ecore000", "Esocket0"}
    assert all(s.zone.startswith("hwmon7/") for s in sensors if s.duplicate_of)


def test_an_overlapping_acpi_processor_meter_is_never_read_into_the_same_series(tmp_path):
    """Both book into {socket="all", domain="package"}: the narrower one is listed, not read,
    whichever hwmon index comes first."""
    sysfs = tmp_path / "sys"
    make_acpi_meter(sysfs, 0, "CPU0 meter", 80_000_000, measures=("ACPI0007:01",))
    make_acpi_meter(sysfs, 1, "CPU meter", 150_000_000, measures=("ACPI0007:00", "ACPI0007:01"))
    meter = HwmonMeter(str(sysfs))
    assert [(s.label, s.used_in_total, s.duplicate_of) for s in meter.sensors] == [
        ("CPU0 meter", False, "hwmon1/power1"), ("CPU meter", True, "")]
    meter.measure(0.0, None)
    r = meter.measure(1.0, None)
    assert series(meter, r.joules)[("all", "package")] == pytest.approx(150.0)


def test_an_acpi_processor_meter_next_to_amd_energy_is_not_in_the_totals(tmp_path):
    sysfs = tmp_path / "sys"
    amd_node(sysfs)
    make_acpi_meter(sysfs, 5, "CPU meter", 150_000_000, measures=("ACPI0007:00", "ACPI0007:01"))
    sensors, _ = discover(str(sysfs))
    assert [s.label for s in sensors if s.used_in_total] == ["Esocket0", "Esocket1"]
