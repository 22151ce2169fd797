"""The hwmon CPU meter against simulated sysfs trees: a two-socket NVIDIA Grace node whose ACPI
power meters overlap (module ⊇ grace ⊇ cpu, sysio), an amd_energy node (socket ⊇ cores), an x86
node with an ACPI power meter, and `wattprint check` for each and for a host with no hwmon.

The trees reproduce the kernel's shapes, as upstream writes them:

* ACPI power meter (torvalds/linux drivers/hwmon/acpi_power_meter.c 00f4095c): the attributes —
  ``name`` = ``power_meter``, ``power1_average`` in µW (ACPI mW × 1000), ``power1_average_interval``
  in ms, ``power1_oem_info``, ``power1_accuracy`` ("%u.%u%%"), ``power1_is_battery``,
  ``power1_model_number``, ``power1_serial_number`` and the ``measures/`` links — live on the ACPI
  device, which ``/sys/class/hwmon/hwmonN/device`` links to; ``hwmonN/`` itself holds none of them.
* NVIDIA Grace: one such meter per rail and socket, ``power1_oem_info`` = "Module Power Socket N",
  "Grace Power Socket N", "CPU Power Socket N", "SysIO Power Socket N" (NVIDIA Grace Performance
  Tuning Guide, Power Telemetry; alumet-dev/alumet plugin-grace-hopper/src/lib.rs reads
  ``hwmonN/device/power1_oem_info`` and ``power1_average`` the same way).
* amd_energy (Documentation/hwmon/amd_energy.rst 2313f470; labels ``Ecore%03u``, ``Esocket%u`` in
  the driver): registered with hwmon_device_register_with_info, so ``name``, ``energyN_input`` (µJ)
  and ``energyN_label`` are in ``hwmonN/``; cores first, then sockets.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import pytest

from exporter import check, config
from exporter.sensors import MeterError, hwmon, registry
from exporter.sensors.hwmon import HwmonMeter, discover
from support import ROOT, make_powercap, make_procfs

GRACE_KINDS = ("Module", "Grace", "CPU", "SysIO")


def make_acpi_meter(sysfs: Path, n: int, oem_info: str, microwatts: int, measures: tuple[str, ...] = (),
                    interval_ms: int = 1000) -> Path:
    """``class/hwmon/hwmon<n>/device`` → ``devices/LNXSYSTM:00/ACPI000D:<n>`` with the driver's files."""
    dev = sysfs / "devices" / "LNXSYSTM:00" / f"ACPI000D:{n:02d}"
    dev.mkdir(parents=True)
    files = {"name": "power_meter", "power1_average": str(microwatts), "power1_average_interval": str(interval_ms),
             "power1_average_interval_min": "50", "power1_average_interval_max": "1000",
             "power1_oem_info": oem_info, "power1_accuracy": "95.0%", "power1_is_battery": "0",
             "power1_model_number": "", "power1_serial_number": ""}
    for leaf, value in files.items():
        (dev / leaf).write_text(value + "\n")
    (dev / "measures").mkdir()
    for target in measures:
        (sysfs / "devices" / "LNXSYSTM:00" / target).mkdir(exist_ok=True)
        (dev / "measures" / target).symlink_to(f"../../{target}")
    hw = sysfs / "class" / "hwmon" / f"hwmon{n}"
    hw.mkdir(parents=True)
    (hw / "device").symlink_to(os.path.relpath(dev, hw))
    return dev / "power1_average"


def grace_node(sysfs: Path, sockets: int = 2, skip: tuple[str, ...] = ()) -> dict[str, Path]:
    """A GH200-style node: per socket Module/Grace/CPU/SysIO meters; returns label -> power file."""
    watts = {"Module": 600, "Grace": 250, "CPU": 180, "SysIO": 40}
    out, n = {}, 0
    for socket in range(sockets):
        for kind in GRACE_KINDS:
            label = f"{kind} Power Socket {socket}"
            if label in skip:
                continue
            out[label] = make_acpi_meter(sysfs, n, label, watts[kind] * 1_000_000 + socket * 1_000_000)
            n += 1
    return out


def amd_node(sysfs: Path, cores: int = 4, sockets: int = 2) -> Path:
    hw = sysfs / "class" / "hwmon" / "hwmon0"
    hw.mkdir(parents=True)
    (hw / "name").write_text("amd_energy\n")
    for i in range(cores + sockets):
        label = f"Ecore{i:03d}" if i < cores else f"Esocket{i - cores}"
        (hw / f"energy{i + 1}_label").write_text(label + "\n")
        (hw / f"energy{i + 1}_input").write_text(f"{(i + 1) * 1_000_000}\n")
    (sysfs / "class" / "hwmon" / "hwmon1").mkdir()
    (sysfs / "class" / "hwmon" / "hwmon1" / "name").write_text("k10temp\n")  # not a power sensor
    (sysfs / "class" / "hwmon" / "hwmon1" / "temp1_input").write_text("45000\n")
    return hw


def write(path: Path, value: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{value}\n")
    os.replace(tmp, path)


def cfg(tmp_path, **flags):
    base = {("path", "sysfs"): str(tmp_path / "sys"), ("path", "procfs"): str(tmp_path / "proc"),
            ("carbon", "region"): "FR", ("carbon", "detect_region"): "off"}
    base.update({tuple(k.split("__")): v for k, v in flags.items()})
    make_procfs(tmp_path / "proc", {}, 100, 100)
    return config.load(None, base)


# --- Grace ------------------------------------------------------------------------------------

def test_grace_overlapping_sensors_only_the_grace_socket_sensors_are_in_totals(tmp_path):
    grace_node(tmp_path / "sys")
    sensors, problem = discover(str(tmp_path / "sys"))
    assert problem == ""
    got = {(s.label, s.domain, s.socket, s.kind, s.used_in_total) for s in sensors}
    assert got == {(f"{k} Power Socket {n}", {"Module": "module", "Grace": "grace", "CPU": "cpu",
                                              "SysIO": "sysio"}[k], str(n), "power", k == "Grace")
                   for k in GRACE_KINDS for n in (0, 1)}
    assert all(os.path.basename(s.path) == "power1_average" and s.interval_s == 1.0 for s in sensors)


def test_grace_socket_without_its_grace_sensor_uses_cpu_plus_sysio(tmp_path):
    grace_node(tmp_path / "sys", skip=("Grace Power Socket 1",))
    sensors, _ = discover(str(tmp_path / "sys"))
    used = sorted((s.socket, s.domain) for s in sensors if s.used_in_total)
    assert used == [("0", "grace"), ("1", "cpu"), ("1", "sysio")]  # never module, never grace + its rails


def test_grace_power_is_integrated_and_one_failing_sensor_degrades_only_its_zone(tmp_path):
    files = grace_node(tmp_path / "sys")
    meter = HwmonMeter(str(tmp_path / "sys"))
    assert meter.measure(0.0, None).joules["hwmon1/power1"] == 0.0   # first read primes
    # Grace socket 0 ramps 250 W -> 350 W over 2 s: the trapezoid is exact for a linear ramp
    write(files["Grace Power Socket 0"], 350_000_000)
    r = meter.measure(2.0, None)
    assert r.errors == {}
    assert r.joules["hwmon1/power1"] == pytest.approx(600.0)          # (250 + 350) / 2 × 2
    assert r.joules["hwmon5/power1"] == pytest.approx(251 * 2)        # Grace socket 1, constant 251 W
    # the CPU rail of socket 0 vanishes for a read: that zone alone is counted and skipped
    files["CPU Power Socket 0"].unlink()
    r = meter.measure(1.0, None)
    assert r.errors == {"hwmon2/power1": "read"}
    assert "hwmon2/power1" not in r.joules and r.joules["hwmon1/power1"] == pytest.approx(350.0)
    write(files["CPU Power Socket 0"], 200_000_000)                   # back: its next read spans the gap
    r = meter.measure(1.0, None)
    assert r.errors == {} and r.joules["hwmon2/power1"] == pytest.approx((180 + 200) / 2 * 2)


def test_a_power_gap_longer_than_max_gap_is_estimated_not_measured(tmp_path):
    files = grace_node(tmp_path / "sys", sockets=1)
    meter = HwmonMeter(str(tmp_path / "sys"))
    meter.measure(0.0, None)
    files["Grace Power Socket 0"].unlink()
    for _ in range(4):
        assert meter.measure(10.0, None).errors["hwmon1/power1"] == "read"
    write(files["Grace Power Socket 0"], 250_000_000)
    r = meter.measure(10.0, None)
    assert r.errors["hwmon1/power1"] == "gap_estimated"
    assert r.joules["hwmon1/power1"] == 0.0 and r.estimated["hwmon1/power1"] == pytest.approx(250 * 50)


def test_checkpoint_restore_hands_the_same_joules_again(tmp_path):
    files = grace_node(tmp_path / "sys", sockets=1)
    meter = HwmonMeter(str(tmp_path / "sys"))
    meter.measure(0.0, None)
    cp = meter.checkpoint()
    write(files["Grace Power Socket 0"], 350_000_000)
    first = meter.measure(2.0, None).joules["hwmon1/power1"]
    meter.restore(cp)
    again = meter.measure(0.0, None).joules["hwmon1/power1"]
    assert first == pytest.approx(600.0) and again == pytest.approx(first)


def test_the_poller_integrates_between_samples_at_the_sensors_own_window(tmp_path):
    files = grace_node(tmp_path / "sys", sockets=1)
    now = [0.0]
    meter = HwmonMeter(str(tmp_path / "sys"), clock=lambda: now[0])
    assert hwmon.poll_interval_s(meter.sensors) == 1.0          # power1_average_interval 1000 ms
    meter.measure(0.0, None)
    for t, w in ((1.0, 300), (2.0, 200), (3.0, 400)):           # what only the poller sees
        now[0] = t
        write(files["Grace Power Socket 0"], w * 1_000_000)
        meter.poll()
    now[0] = 4.0
    write(files["Grace Power Socket 0"], 400_000_000)
    got = meter.measure(4.0, None).joules["hwmon1/power1"]
    assert got == pytest.approx((250 + 300) / 2 + (300 + 200) / 2 + (200 + 400) / 2 + 400)
    slow = tmp_path / "slow"
    make_acpi_meter(slow, 0, "Grace Power Socket 0", 1, interval_ms=5000)
    assert hwmon.poll_interval_s(discover(str(slow))[0]) == 5.0
    amd = tmp_path / "amd"
    amd_node(amd)
    assert hwmon.poll_interval_s(discover(str(amd))[0]) == hwmon.POLL_MAX_S   # counters alone


class FakeTime(types.SimpleNamespace):
    def monotonic(self) -> float:
        return self.now


def test_grace_node_through_the_sampler_books_grace_sockets_only(tmp_path, monkeypatch):
    """auto picks hwmon on a Grace node without RAPL; node totals are the two Grace sensors."""
    files = grace_node(tmp_path / "sys")
    clock = FakeTime(now=100.0)
    monkeypatch.setattr(hwmon, "time", clock)
    c = cfg(tmp_path, gpu__backend="none", kubernetes__enabled="off")
    from exporter import daemon

    sampler = daemon.build_sampler(c)
    assert sampler.cpu_method == "hwmon"
    t = [0.0]
    sampler.clock = lambda: t[0]
    sampler.sample()
    for label, w in (("Grace Power Socket 0", 260), ("Grace Power Socket 1", 271), ("Module Power Socket 0", 900)):
        write(files[label], w * 1_000_000)
    t[0], clock.now = 2.0, 102.0
    make_procfs(tmp_path / "proc", {}, 200, 200)
    sampler.sample()
    text = sampler.metrics_text()
    want = (250 + 260) / 2 * 2 + (251 + 271) / 2 * 2
    line = next(ln for ln in text.splitlines() if ln.startswith('wattprint_node_energy_joules_total{component="cpu"}'))
    assert float(line.split()[-1]) == pytest.approx(want)
    assert 'wattprint_cpu_energy_joules_total{domain="module",method="hwmon",socket="0"} 1500.0' in text
    assert ('wattprint_cpu_zone_info{domain="module",method="hwmon",readable="true",socket="0",'
            'used_in_total="false",zone="hwmon0/power1"} 1.0') in text
    assert ('wattprint_cpu_zone_info{domain="grace",method="hwmon",readable="true",socket="1",'
            'used_in_total="true",zone="hwmon5/power1"} 1.0') in text
    files["CPU Power Socket 1"].unlink()   # one sensor fails: counted, the others still booked
    t[0], clock.now = 3.0, 103.0
    make_procfs(tmp_path / "proc", {}, 300, 300)
    sampler.sample()
    text = sampler.metrics_text()
    assert 'wattprint_collector_errors_total{collector="hwmon",kind="read"} 1.0' in text
    line = next(ln for ln in text.splitlines() if ln.startswith('wattprint_node_energy_joules_total{component="cpu"}'))
    assert float(line.split()[-1]) == pytest.approx(want + 260 + 271)


# --- amd_energy -------------------------------------------------------------------------------

def test_amd_energy_sockets_in_totals_cores_not_and_a_reset_is_estimated(tmp_path):
    hw = amd_node(tmp_path / "sys")
    meter = HwmonMeter(str(tmp_path / "sys"))
    by = {s.label: s for s in meter.sensors}
    assert sorted(by) == ["Ecore000", "Ecore001", "Ecore002", "Ecore003", "Esocket0", "Esocket1"]
    assert [s.label for s in meter.sensors if s.used_in_total] == ["Esocket0", "Esocket1"]
    assert by["Esocket1"].socket == "1" and by["Ecore002"].domain == "core" and by["Esocket0"].kind == "energy"
    meter.measure(0.0, None)
    write(hw / "energy5_input", 5_000_000 + 120_000_000)   # Esocket0: 120 J in 1 s
    r = meter.measure(1.0, None)
    assert r.errors == {} and r.joules["hwmon0/energy5"] == pytest.approx(120.0)
    write(hw / "energy5_input", 3_000_000)                  # backwards: the driver was reloaded
    r = meter.measure(1.0, None)
    assert r.errors == {"hwmon0/energy5": "reset"}
    assert r.joules["hwmon0/energy5"] == 0.0 and r.estimated["hwmon0/energy5"] == pytest.approx(120.0)
    write(hw / "energy5_input", 3_000_000 + 100_000_000)   # counting again from the new value
    r = meter.measure(1.0, None)
    assert r.errors == {} and r.joules["hwmon0/energy5"] == pytest.approx(100.0)


def test_amd_energy_without_socket_counters_falls_back_to_cores(tmp_path):
    hw = amd_node(tmp_path / "sys")
    for n in (5, 6):
        (hw / f"energy{n}_input").unlink()
    sensors, _ = discover(str(tmp_path / "sys"))
    assert [s.label for s in sensors if s.used_in_total] == ["Ecore000", "Ecore001", "Ecore002", "Ecore003"]


PROBE = """
import json, sys
sys.path.insert(0, {path!r})
from exporter.sensors import hwmon
m = hwmon.HwmonMeter({sysfs!r})
print(json.dumps({{"sensors": [[s.label, s.readable, s.problem] for s in m.sensors], "usable": m.usable}}))
"""


def test_root_only_amd_energy_counters_are_explained():
    """Real permissions (CVE-2020-12912: energyN_input readable by owner and group only), read by
    an unprivileged process (user 'nobody' when the tests run as root)."""
    import json

    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        hw = amd_node(Path(tmp) / "sys")
        for n in range(1, 7):
            (hw / f"energy{n}_input").chmod(0o440 if os.geteuid() == 0 else 0o000)
        kw = {"user": 65534, "group": 65534} if os.geteuid() == 0 else {}
        out = subprocess.run([python, "-c", PROBE.format(path=str(ROOT), sysfs=str(Path(tmp) / "sys"))],
                             capture_output=True, text=True, **kw)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["usable"] is False
    assert all(not readable and "CVE-2020-12912" in problem for _, readable, problem in got["sensors"])


# --- ACPI power meter (x86) -------------------------------------------------------------------

def test_acpi_whole_system_meter_is_exported_but_never_the_cpu(tmp_path):
    make_acpi_meter(tmp_path / "sys", 0, "", 450_000_000, measures=("LNXSYBUS:00",))
    meter = HwmonMeter(str(tmp_path / "sys"))
    (s,) = meter.sensors
    assert (s.chip, s.domain, s.socket, s.used_in_total) == ("power_meter", "platform", "platform", False)
    assert not meter.usable


def test_acpi_meter_of_the_processors_is_the_cpu(tmp_path):
    make_acpi_meter(tmp_path / "sys", 0, "CPU meter", 150_000_000, measures=("ACPI0007:00", "ACPI0007:01"))
    meter = HwmonMeter(str(tmp_path / "sys"))
    (s,) = meter.sensors
    assert (s.domain, s.used_in_total, meter.usable) == ("package", True, True)
    # a second meter of one of the same processors overlaps it: exported, never summed
    make_acpi_meter(tmp_path / "sys", 1, "CPU0 meter", 80_000_000, measures=("ACPI0007:01",))
    make_acpi_meter(tmp_path / "sys", 2, "CPU2 meter", 70_000_000, measures=("ACPI0007:02",))
    sensors, _ = discover(str(tmp_path / "sys"))
    assert [(x.label, x.used_in_total) for x in sensors] == [("CPU meter", True), ("CPU0 meter", False),
                                                              ("CPU2 meter", True)]


# --- the registry and check -------------------------------------------------------------------

def test_registry_order_is_rapl_hwmon_estimate():
    assert list(registry.CPU_METERS) == ["rapl", "hwmon", "estimate"]


def test_rapl_is_chosen_before_hwmon(tmp_path):
    make_powercap(tmp_path / "sys", {"intel-rapl:0": {"name": "package-0", "energy_uj": 1}})
    make_acpi_meter(tmp_path / "sys", 0, "CPU meter", 1, measures=("ACPI0007:00",))
    meter = registry.open_cpu(cfg(tmp_path))
    assert meter.name == "rapl"


def test_explicit_hwmon_without_sensors_is_a_clear_error(tmp_path):
    (tmp_path / "sys").mkdir()
    with pytest.raises(MeterError, match=r"cpu.meter=hwmon: not usable here: hwmon: not usable — .*class/hwmon "
                                         r"does not exist"):
        registry.open_cpu(cfg(tmp_path, cpu__meter="hwmon"))
    make_acpi_meter(tmp_path / "sys", 0, "", 450_000_000)
    with pytest.raises(MeterError, match="no readable sensor that measures the CPU alone \\(platform found"):
        registry.open_cpu(cfg(tmp_path, cpu__meter="hwmon"))


def _check_text(tmp_path, **flags) -> tuple[dict, str]:
    rep = check.diagnose(cfg(tmp_path, gpu__backend="none", **flags))
    return rep, check.render_text(rep)


def test_check_on_a_grace_node(tmp_path):
    grace_node(tmp_path / "sys")
    rep, text = _check_text(tmp_path)
    assert rep["cpu_meter"] == "hwmon" and rep["hwmon"]["usable"]
    assert ("✔ hwmon: usable — grace socket 0, grace socket 1 in the node total (power integrated)") in text
    assert ("hwmon0/power1 power_meter 'Module Power Socket 0': domain module, socket 0, power1_average "
            "(µW, integrated): readable, not in totals") in text
    assert "cpu hwmon" in text.split("meters in use:")[1].split("(")[0]
    assert "CPU energy is an estimate" not in text   # RAPL's advice is for estimate-only hosts
    from exporter import cli

    args = ["check", f"--path.sysfs={tmp_path / 'sys'}", f"--path.procfs={tmp_path / 'proc'}", "--gpu.backend=none",
            "--carbon.region=FR", "--carbon.detect-region=off", "--output=json"]
    assert cli.main([*args, "--cpu.meter=hwmon"]) == 0     # asked for and usable: the gate opens
    assert cli.main([*args, "--cpu.meter=rapl"]) == 1      # asked for, absent here: it stays shut


def test_check_on_an_amd_energy_node(tmp_path):
    amd_node(tmp_path / "sys")
    rep, text = _check_text(tmp_path)
    assert rep["cpu_meter"] == "hwmon"
    assert "✔ hwmon: usable — package socket 0, package socket 1 in the node total (energy counter)" in text
    assert "'Ecore000': domain core, socket all, energy1_input (µJ counter): readable, not in totals" in text


def test_check_on_an_acpi_power_meter_node(tmp_path):
    make_acpi_meter(tmp_path / "sys", 0, "", 450_000_000, measures=("LNXSYBUS:00",))
    rep, text = _check_text(tmp_path)
    assert rep["cpu_meter"] == "estimate"
    assert ("✘ hwmon: not usable — no readable sensor that measures the CPU alone (platform found, never "
            "summed into the CPU)") in text
    assert "'(no label)': domain platform, socket platform, power1_average (µW, integrated): readable" in text


def test_check_without_hwmon_says_why_and_exits_clean(tmp_path):
    (tmp_path / "sys").mkdir()
    rep, text = _check_text(tmp_path)
    assert rep["cpu_meter"] == "estimate" and not rep["hwmon"]["usable"]
    assert "✘ hwmon: not usable — " in text and "class/hwmon does not exist" in text
    make_acpi_meter(tmp_path / "sys", 0, "", 1)  # only a k10temp-like chip: no power sensor known
    (tmp_path / "sys/class/hwmon/hwmon0/device/name").write_text("k10temp\n")
    _, text = _check_text(tmp_path)
    assert "has no known power or energy sensor (chips: k10temp; known: amd_energy, power_meter)" in text


def test_readme_documents_the_sensor_table():
    readme = (ROOT / "README.md").read_text()
    assert hwmon.markdown_table() in readme
