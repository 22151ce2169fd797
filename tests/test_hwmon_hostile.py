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
import math
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


# --- read-time errnos, as sysfs returns them ----------------------------------------------------

class FailingRead:
    """sysfs: open() succeeds, read() returns the show() callback's -errno."""

    def __init__(self, err: int) -> None:
        self.err = err

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def read(self, *_a):
        raise OSError(self.err, os.strerror(self.err))


@pytest.fixture
def failing(monkeypatch):
    """``failing[path] = errno``: reads of that file fail with it, other files read normally."""
    table: dict[str, int] = {}   # by the file's real path (the meter reads through the links)

    def fake_open(path, *a, **kw):
        if os.path.realpath(path) in table:
            return FailingRead(table[os.path.realpath(path)])
        return builtins.open(path, *a, **kw)

    monkeypatch.setattr(hwmon, "open", fake_open, raising=False)
    return table


@pytest.mark.parametrize("err", [errno.EIO, errno.EAGAIN, errno.ETIMEDOUT])
def test_a_transient_read_error_at_discovery_keeps_the_sensor_and_counts_each_failed_read(tmp_path, failing, err):
    files = grace_node(tmp_path / "sys", sockets=1)
    failing[str(files["Grace Power Socket 0"])] = err
    meter = HwmonMeter(str(tmp_path / "sys"))
    grace = next(s for s in meter.sensors if s.domain == "grace")
    assert grace.readable and grace.used_in_total and "counted" in grace.problem
    assert meter.measure(0.0, None).errors == {grace.zone: "read"}
    del failing[str(files["Grace Power Socket 0"])]
    assert meter.measure(1.0, None).errors == {}          # primes
    write(files["Grace Power Socket 0"], 270_000_000)
    failing[str(files["Grace Power Socket 0"])] = err
    assert meter.measure(1.0, None).errors == {grace.zone: "read"}
    del failing[str(files["Grace Power Socket 0"])]
    r = meter.measure(1.0, None)                          # the good read spans the failed one
    assert r.errors == {} and r.joules[grace.zone] == pytest.approx((250 + 270) / 2 * 2)


def test_enodata_or_permission_denied_on_one_sensor_only_degrades_that_socket_to_its_rails(tmp_path, failing):
    files = grace_node(tmp_path / "sys")
    failing[str(files["Grace Power Socket 1"])] = errno.EACCES
    failing[str(files["Module Power Socket 0"])] = errno.ENODATA
    sensors, problem = discover(str(tmp_path / "sys"))
    assert problem == ""
    by = {s.label: s for s in sensors}
    assert not by["Grace Power Socket 1"].readable and "permission denied" in by["Grace Power Socket 1"].problem
    assert not by["Module Power Socket 0"].readable and "ENODATA" in by["Module Power Socket 0"].problem
    assert sorted((s.socket, s.domain) for s in sensors if s.used_in_total) == [
        ("0", "grace"), ("1", "cpu"), ("1", "sysio")]


# --- garbage and absurd values ------------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "\n", "123abc\n", "1_000\n", "0x10\n", "12 34\n", "nan\n"])
def test_a_value_that_is_not_a_sysfs_integer_is_a_parse_error_never_a_number(tmp_path, text):
    files = grace_node(tmp_path / "sys", sockets=1)
    meter = HwmonMeter(str(tmp_path / "sys"))
    zone = next(s.zone for s in meter.sensors if s.domain == "grace")
    meter.measure(0.0, None)
    files["Grace Power Socket 0"].write_text(text)
    r = meter.measure(1.0, None)
    assert r.errors == {zone: "parse"} and zone not in r.joules
    write(files["Grace Power Socket 0"], 250_000_000)
    assert meter.measure(1.0, None).joules[zone] == pytest.approx(500.0)   # nothing lost


def test_a_negative_energy_count_is_a_parse_error_not_a_reset(tmp_path):
    hw = amd_node(tmp_path / "sys")
    meter = HwmonMeter(str(tmp_path / "sys"))
    meter.measure(0.0, None)
    write(hw / "energy5_input", -5)
    r = meter.measure(1.0, None)
    assert r.errors == {"hwmon0/energy5": "parse"} and not r.estimated
    write(hw / "energy5_input", 5_000_000 + 240_000_000)
    r = meter.measure(1.0, None)
    assert r.errors == {} and r.joules["hwmon0/energy5"] == pytest.approx(240.0)


@pytest.mark.parametrize("microwatts", [2**63 - 1, 2**64, 6_000 * 10**6])
def test_an_absurd_power_spike_is_counted_and_never_booked(tmp_path, microwatts):
    files = grace_node(tmp_path / "sys", sockets=1)
    meter = HwmonMeter(str(tmp_path / "sys"))
    zone = next(s.zone for s in meter.sensors if s.domain == "grace")
    meter.measure(0.0, None)
    write(files["Grace Power Socket 0"], microwatts)
    r = meter.measure(1.0, None)
    assert r.errors == {zone: "implausible"} and zone not in r.joules
    write(files["Grace Power Socket 0"], 260_000_000)
    r = meter.measure(1.0, None)                        # the trapezoid from the last good read
    assert r.errors == {} and r.joules[zone] == pytest.approx((250 + 260) / 2 * 2)


def test_a_module_sensor_may_read_kilowatts(tmp_path):
    files = grace_node(tmp_path / "sys", sockets=1)
    meter = HwmonMeter(str(tmp_path / "sys"))
    zone = next(s.zone for s in meter.sensors if s.domain == "module")
    meter.measure(0.0, None)
    write(files["Module Power Socket 0"], 2_700 * 10**6)  # a GB200 superchip module
    r = meter.measure(1.0, None)
    assert r.errors == {} and r.joules[zone] == pytest.approx((600 + 2700) / 2)


def test_an_absurd_energy_jump_is_estimated_not_measured(tmp_path):
    hw = amd_node(tmp_path / "sys")
    meter = HwmonMeter(str(tmp_path / "sys"))
    meter.measure(0.0, None)
    write(hw / "energy5_input", 5_000_000 + 200_000_000)        # 200 W
    meter.measure(1.0, None)
    write(hw / "energy5_input", 2**62)                           # a corrupted count
    r = meter.measure(1.0, None)
    assert r.errors == {"hwmon0/energy5": "implausible"}
    assert r.joules["hwmon0/energy5"] == 0.0 and r.estimated["hwmon0/energy5"] == pytest.approx(200.0)
    write(hw / "energy5_input", 2**62 + 210_000_000)             # counting on from there
    r = meter.measure(1.0, None)
    assert r.errors == {} and r.joules["hwmon0/energy5"] == pytest.approx(210.0)


def test_an_amd_energy_counter_wrapping_at_2_pow_48_uj_is_measured_exactly(tmp_path):
    hw = amd_node(tmp_path / "sys")
    meter = HwmonMeter(str(tmp_path / "sys"))
    top = 2**48
    write(hw / "energy5_input", top - 500_000_000)
    meter.measure(0.0, None)
    write(hw / "energy5_input", top - 250_000_000)               # 250 W
    assert meter.measure(1.0, None).joules["hwmon0/energy5"] == pytest.approx(250.0)
    write(hw / "energy5_input", 10_000_000)                      # wrapped: 250 + 10 J
    r = meter.measure(1.0, None)
    assert r.errors == {} and r.joules["hwmon0/energy5"] == pytest.approx(260.0) and not r.estimated


def test_a_reset_from_a_value_far_below_a_power_of_two_is_still_a_reset(tmp_path):
    hw = amd_node(tmp_path / "sys")
    meter = HwmonMeter(str(tmp_path / "sys"))
    write(hw / "energy5_input", 3 * 2**46)
    meter.measure(0.0, None)
    write(hw / "energy5_input", 3 * 2**46 + 250_000_000)
    meter.measure(1.0, None)
    write(hw / "energy5_input", 1_000_000)                       # the driver was reloaded
    r = meter.measure(1.0, None)
    assert r.errors == {"hwmon0/energy5": "reset"} and r.estimated["hwmon0/energy5"] == pytest.approx(250.0)


# --- hwmon devices that come and go -------------------------------------------------------------

def unbind(sysfs: Path, n: int) -> None:
    """Driver unbind / hot-unplug: the class link and the device's hwmon directory go away."""
    import shutil

    link = sysfs / "class" / "hwmon" / f"hwmon{n}"
    if link.is_symlink():
        target = link.resolve()
        link.unlink()
        shutil.rmtree(target)
    else:  # make_acpi_meter's hwmonN directory (the ACPI device it links to stays, as it does)
        shutil.rmtree(link)


def test_a_chip_that_disappears_is_counted_then_dropped_and_a_new_one_is_found(tmp_path):
    sysfs = tmp_path / "sys"
    grace_node(sysfs, sockets=1)
    make_linked_chip(sysfs, 9, "k10temp", {"temp1_input": "45000"}, parent="devices/pci0000:00/0000:00:18.3")
    meter = HwmonMeter(str(sysfs))
    meter.measure(0.0, None)
    grace = next(s for s in meter.sensors if s.domain == "grace")
    unbind(sysfs, 1)                                   # the Grace socket meter's hwmon1
    r = meter.measure(10.0, None)
    assert r.errors == {grace.zone: "read"}            # counted until the next discovery
    for _ in range(5):
        r = meter.measure(10.0, None)                  # 60 s: found again
    assert grace.zone not in {s.zone for s in meter.sensors}
    assert sorted(s.domain for s in meter.sensors if s.used_in_total) == ["cpu", "sysio"]
    assert r.errors == {} and meter.cpu_zones() is not None
    assert {z.zone for z in meter.cpu_zones()} == {s.zone for s in meter.sensors}
    # a driver loaded later (everything else reads fine): found within 60 s
    amd = {"energy1_input": "1000000", "energy1_label": "Esocket0"}
    make_linked_chip(sysfs, 12, "amd_energy", amd, parent="devices/platform/amd_energy.0")
    for _ in range(6):
        meter.measure(10.0, None)
    assert "hwmon12/energy1" in {s.zone for s in meter.sensors}


def test_a_sensor_that_comes_back_primes_again_instead_of_estimating_its_absence(tmp_path):
    sysfs = tmp_path / "sys"
    hw = make_linked_chip(sysfs, 3, "amd_energy", {"energy1_input": "1000000", "energy1_label": "Esocket0"},
                          parent="devices/platform/amd_energy.0")
    meter = HwmonMeter(str(sysfs))
    meter.measure(0.0, None)
    write(hw / "energy1_input", 1_000_000 + 100_000_000)
    assert meter.measure(1.0, None).joules["hwmon3/energy1"] == pytest.approx(100.0)
    unbind(sysfs, 3)
    for _ in range(6):
        meter.measure(10.0, None)
    assert meter.sensors == [] and not meter.usable
    hw = make_linked_chip(sysfs, 3, "amd_energy", {"energy1_input": "2000000", "energy1_label": "Esocket0"},
                          parent="devices/platform/amd_energy.0")   # reloaded: counting from 0 again
    for _ in range(6):
        r = meter.measure(10.0, None)
    assert meter.usable and not r.estimated and "reset" not in r.errors.values()
    write(hw / "energy1_input", 2_000_000 + 50_000_000)
    r = meter.measure(1.0, None)
    assert r.errors == {} and r.joules["hwmon3/energy1"] == pytest.approx(50.0)


def test_a_grace_node_at_a_host_sysfs_mount_through_the_sampler_survives_an_unbind(tmp_path, monkeypatch):
    """``--path.sysfs=/host/sys`` (the DaemonSet's hostPath mount), no RAPL (no class/powercap),
    the real symlinked layout; one meter's driver is unbound mid-run: the sampling loop goes on,
    the socket's total moves to its CPU + SysIO rails after the next discovery."""
    from test_hwmon import FakeTime, cfg
    from support import make_procfs

    sysfs = tmp_path / "host" / "sys"
    files = {}
    for n, (label, watts) in enumerate([("Grace Power Socket 0", 250), ("CPU Power Socket 0", 180),
                                        ("SysIO Power Socket 0", 40)]):
        hdir = make_linked_chip(sysfs, n, "power_meter", {}, parent=f"devices/LNXSYSTM:00/ACPI000D:0{n}")
        dev = hdir.parent.parent
        for leaf, value in (("power1_average", str(watts * 10**6)), ("power1_oem_info", label),
                            ("power1_average_interval", "1000")):
            (dev / leaf).write_text(value + "\n")
        files[label] = dev / "power1_average"
        (hdir / "name").unlink()
        (dev / "name").write_text("power_meter\n")   # acpi_power_meter: name on the ACPI device
    clock = FakeTime(now=100.0)
    monkeypatch.setattr(hwmon, "time", clock)
    c = cfg(tmp_path, gpu__backend="none", kubernetes__enabled="off", path__sysfs=str(sysfs))
    from exporter import daemon

    sampler = daemon.build_sampler(c)
    assert sampler.cpu_method == "hwmon"
    t = [0.0]
    sampler.clock = lambda: t[0]
    sampler.sample()

    def node_cpu() -> float:
        text = sampler.metrics_text()
        line = next(ln for ln in text.splitlines()
                    if ln.startswith('wattprint_node_energy_joules_total{component="cpu"}'))
        return float(line.split()[-1])

    for i in range(1, 3):
        t[0], clock.now = float(i), 100.0 + i
        make_procfs(tmp_path / "proc", {}, 100 * i + 100, 100 * i + 100)
        sampler.sample()
    assert node_cpu() == pytest.approx(500.0)
    unbind(sysfs, 0)
    for i in range(3, 70):
        t[0], clock.now = float(i), 100.0 + i
        make_procfs(tmp_path / "proc", {}, 100 * i + 100, 100 * i + 100)
        sampler.sample()
    text = sampler.metrics_text()
    assert 'wattprint_collector_errors_total{collector="hwmon",kind="read"}' in text
    # the sample that finds the Grace sensor gone (counted) books nothing for it; the next one
    # looks again at once: CPU + SysIO (220 W) from then on
    got = node_cpu()
    assert got == pytest.approx(500.0 + 220 * 66)
    later = got
    t[0], clock.now = 70.0, 170.0
    make_procfs(tmp_path / "proc", {}, 7200, 7200)
    sampler.sample()
    assert node_cpu() - later == pytest.approx(220.0)


# --- names and labels as firmware writes them --------------------------------------------------

def test_names_and_labels_with_whitespace_or_bytes_that_are_not_utf8(tmp_path):
    """``power1_oem_info`` is the ACPI _PMD/OEM string, whatever bytes the firmware holds; ``name``
    and labels end in a newline (and, from some drivers, padding)."""
    sysfs = tmp_path / "sys"
    grace = make_acpi_meter(sysfs, 0, "Grace Power Socket 0", 250_000_000)
    (grace.parent / "name").write_bytes(b"power_meter \n")
    (grace.parent / "power1_oem_info").write_bytes(b"  Grace Power Socket 0\t\n")
    odd = make_acpi_meter(sysfs, 1, "", 400_000_000, measures=("LNXSYBUS:00",))
    (odd.parent / "power1_oem_info").write_bytes(b"Syst\xe8me \xff\xfe\n")        # Latin-1, junk
    chip = make_linked_chip(sysfs, 2, "x", {}, parent="devices/platform/odd.0")
    (chip / "name").write_bytes(b"\xc3\x28\n")                                      # invalid UTF-8
    meter = HwmonMeter(str(sysfs))
    by = {s.zone: s for s in meter.sensors}
    assert by["hwmon0/power1"].domain == "grace" and by["hwmon0/power1"].used_in_total
    assert by["hwmon1/power1"].domain == "platform" and "\ufffd" in by["hwmon1/power1"].label
    for _ in range(7):
        meter.measure(10.0, None)      # rediscovery reads them again: never raises
    assert meter.usable


def test_a_discovery_that_raises_never_ends_the_sampling_loop(tmp_path, monkeypatch):
    grace_node(tmp_path / "sys", sockets=1)
    meter = HwmonMeter(str(tmp_path / "sys"))
    meter.measure(0.0, None)

    def broken(_sysfs):
        raise RuntimeError("a tree no one foresaw")

    monkeypatch.setattr(hwmon, "discover", broken)
    for _ in range(5):
        assert meter.measure(10.0, None).errors == {}
    r = meter.measure(10.0, None)                     # 60 s: rediscovery is due
    zone = next(s.zone for s in meter.sensors if s.domain == "grace")
    assert r.errors == {"discovery": "discovery"} and r.joules[zone] == pytest.approx(250 * 10)
    assert meter.measure(1.0, None).errors == {}      # not retried at every sample


def test_a_stuck_absurd_reading_is_counted_every_sample_and_logged_once_a_run(tmp_path, caplog):
    import logging

    files = grace_node(tmp_path / "sys", sockets=1)
    meter = HwmonMeter(str(tmp_path / "sys"))
    zone = next(s.zone for s in meter.sensors if s.domain == "grace")
    meter.measure(0.0, None)
    write(files["Grace Power Socket 0"], 2**63 - 1)
    with caplog.at_level(logging.WARNING, "exporter.sensors.hwmon"):
        for _ in range(5):
            assert meter.measure(1.0, None).errors == {zone: "implausible"}
        write(files["Grace Power Socket 0"], 250_000_000)
        meter.measure(1.0, None)
        write(files["Grace Power Socket 0"], 2**63 - 1)
        meter.measure(1.0, None)
    assert sum("implausible" in r.getMessage() for r in caplog.records) == 2


def test_check_at_a_host_sysfs_mount_lists_the_duplicates_and_exits_0(tmp_path, capsys):
    """``wattprint check --path.sysfs=/host/sys --cpu.meter=hwmon`` on a Grace node whose rails a
    vendor driver exposes a second time (the symlinked layout throughout)."""
    import json

    from exporter import cli
    from support import make_procfs

    sysfs = tmp_path / "host" / "sys"
    grace_driver_chip(sysfs, 0, sockets=2)
    make_linked_chip(sysfs, 1, "grace_hwmon", {"power1_input": "250000000", "power1_label": "Grace Power Socket 0"},
                     parent="devices/platform/grace_hwmon.1")
    make_procfs(tmp_path / "proc", {}, 100, 100)
    args = ["check", f"--path.sysfs={sysfs}", f"--path.procfs={tmp_path / 'proc'}", "--gpu.backend=none",
            "--carbon.region=FR", "--carbon.detect-region=off", "--cpu.meter=hwmon"]
    assert cli.main([*args, "--output=json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    sensors = rep["hwmon"]["sensors"]
    assert [x["zone"] for x in sensors if x["used_in_total"]] == ["hwmon0/power2", "hwmon0/power6"]
    assert [(x["zone"], x["duplicate_of"]) for x in sensors if x["duplicate_of"]] == [("hwmon1/power1", "hwmon0/power2")]
    assert cli.main(args) == 0
    assert ("hwmon1/power1 grace_hwmon 'Grace Power Socket 0': domain grace, socket 0, power1_input (µW, "
            "integrated): the same sensor as hwmon0/power2: never read, never summed, not in totals") in capsys.readouterr().out


# --- any hwmon tree -----------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ = settings(max_examples=int(os.environ.get("WATTPRINT_FUZZ_EXAMPLES", "150")), deadline=None)
VALUE = st.sampled_from(["0\n", "250000000\n", "-5\n", "", "x", "1_000", " 42 ", "9" * 40, str(2**63 - 1),
                         str(2**48 - 1), "18446744073709551615\n"]) | st.integers(-10, 2**64).map(str) \
    | st.binary(max_size=8).map(lambda b: b.decode("latin-1"))
LABEL = st.sampled_from(["Grace Power Socket 0", "grace power socket 0 ", "CPU Power Socket 0", "SysIO Power Socket 1",
                         "Module Power Socket 0", "Esocket0", "Ecore000", "Esocket1", ""]) | st.text(max_size=10)
ATTR = st.sampled_from(["power1_average", "power1_input", "power2_input", "energy1_input", "energy2_input"])
CHIP = st.tuples(st.sampled_from(["power_meter", "amd_energy", "grace_hwmon", "k10temp"]) | st.text(max_size=6),
                 st.dictionaries(ATTR, st.tuples(VALUE, LABEL), max_size=3))
KINDS = {"permission", "read", "parse", "implausible", "reset", "gap_estimated", "discovery"}


@FUZZ
@given(chips=st.lists(CHIP, max_size=4),
       reads=st.lists(st.tuples(st.integers(0, 3), ATTR, VALUE, st.sampled_from([0.0, 1.0, 10.0, 45.0])), max_size=6))
def test_fuzz_hwmon_tree(chips: list, reads: list) -> None:
    """Any hwmon content, symlinked as the kernel does: discovery and reads never raise; errors are
    the documented kinds; every zone's joules are finite, ≥ 0 and at most what its domain can draw
    over the interval; no two zones read measure the same labelled sensor."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        sysfs = Path(d)
        dirs = []
        for n, (chip, attrs) in enumerate(chips):
            files = {}
            for attr, (value, label) in attrs.items():
                files[attr] = value.replace("\x00", "")
                files[attr.replace("_average", "_label").replace("_input", "_label")] = label.replace("\x00", "")
            dirs.append(make_linked_chip(sysfs, n, chip.replace("\x00", "") or "x", files,
                                         parent=f"devices/platform/chip.{n}"))
        meter = HwmonMeter(str(sysfs))
        assert isinstance(meter.problem, str)
        for i, attr, value, dt in [(0, "power1_input", "1", 0.0), *reads]:
            if i < len(dirs) and (dirs[i] / attr).exists():
                (dirs[i] / attr).write_text(value.replace("\x00", ""))
            r = meter.measure(dt, None)
            assert set(r.errors.values()) <= KINDS, r.errors
            domains = {s.zone: s.domain for s in meter.sensors}
            for zone, j in [*r.joules.items(), *r.estimated.items()]:
                assert math.isfinite(j) and 0 <= j <= hwmon.max_w(domains.get(zone, "")) * max(dt, 1.0) + 1e-6, (zone, j)
            read = [s for s in meter.sensors if s.zone in r.joules and s.domain != "platform"
                    and not (s.chip == "power_meter" and s.domain == "package")]
            keys = [(s.domain, s.socket, s.label.strip().lower()) for s in read]
            assert len(keys) == len(set(keys)), keys
