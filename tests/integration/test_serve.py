"""`wattprint serve` and `wattprint check` as users run them: real processes, a real HTTP port on
127.0.0.1, and a real Prometheus (Debian package) scraping the daemon."""

import json
import subprocess
import sys
import threading
import time

import pytest

from support import (ROOT, make_powercap, parse_metrics, set_energy, start_daemon, start_prometheus,
                     value, write_scenario)

pytestmark = pytest.mark.integration


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def test_serve_on_defaults_shows_the_estimate(tmp_path):
    """This machine has no GPU and no RAPL: serve still starts and says what it measures."""
    d = start_daemon(tmp_path)
    try:
        m = parse_metrics(d.get())
        assert d.get("/healthz").strip() == "ok" and "Wattprint" in d.get("/")
    finally:
        log = d.stop()
    zones = {k: v for k, v in m["wattprint_cpu_zone_info"].items()}
    assert any(dict(k)["method"] == "estimate" for k in zones)
    assert ("method", "estimate") in next(iter(m["wattprint_cpu_energy_joules_total"]))
    assert value(m, "wattprint_build_info") == 1
    if "no GPU metering" in log:  # the usual CI host: NVML absent is a state, not an error storm
        assert value(m, "wattprint_collector_up", collector="gpu") == 0
        assert "collector_errors_total" not in "".join(k for k in m if "gpu" in k)
        assert log.count("level=error") == 0


def test_check_explains_missing_meters(tmp_path):
    out = run_cli("check", f"--path.sysfs={tmp_path}")
    assert out.returncode == 0, out.stderr
    assert "does not exist" in out.stdout and "CPU estimate (in use)" in out.stdout
    rep = json.loads(run_cli("check", "--output", "json", f"--path.sysfs={tmp_path}").stdout)
    assert rep["rapl"]["usable"] is False and rep["cpu_estimate"]["used"] is True
    assert rep["gpu"]["state"] in ("no_library", "driver_not_loaded", "ok")
    if rep["gpu"]["state"] == "no_library":
        assert "libnvidia-ml.so.1 not found" in rep["gpu"]["detail"]


def test_check_lists_simulated_gpus_and_rapl_zones(tmp_path):
    make_powercap(tmp_path / "sys", {"intel-rapl:0": {"name": "package-0"}, "intel-rapl:0:0": {"name": "core"}})
    out = run_cli("check", "--gpu.backend=simulated",
                  f"--gpu.simulation-file={ROOT / 'tests/fixtures/sim/two-endpoints.yaml'}",
                  f"--path.sysfs={tmp_path / 'sys'}")
    assert out.returncode == 0, out.stderr
    assert "GPU (simulated): ok" in out.stdout and "energy via counter" in out.stdout
    assert "intel-rapl:0 package socket 0: readable, in node total" in out.stdout
    assert "intel-rapl:0:0 core socket 0: readable\n" in out.stdout


def test_version_and_bad_config_exit_codes():
    assert run_cli("--version").stdout.startswith("wattprint ")
    bad = run_cli("serve", "--log.format=xml")
    assert bad.returncode == 2 and "--log.format: invalid choice: 'xml'" in bad.stderr
    bad = run_cli("serve", "--sample.interval=0")
    assert bad.returncode == 2 and "sample.interval='0'" in bad.stderr and "between 100ms and 5m" in bad.stderr


def test_simulated_backend_without_file_is_a_clear_error():
    out = run_cli("serve", "--gpu.backend=simulated", "--web.listen-address=127.0.0.1:1")
    assert out.returncode == 2 and "needs --gpu.simulation-file" in out.stderr


def _series(prom, expr):
    res = prom.query(expr)
    assert len(res) == 1, res
    return [(float(t), float(v)) for t, v in res[0]["values"]]


def test_prometheus_sees_true_energy(tmp_path):
    """RAPL fixture counters advance (wrapping many times) and a simulated GPU runs at a known
    power; through Prometheus's HTTP API the counters match the true energy."""
    max_range = 100_000_000  # 100 J: wraps every ~2 s at 50 W
    sysfs = make_powercap(tmp_path / "sys", {"intel-rapl:0": {"name": "package-0", "energy_uj": 90_000_000,
                                                              "max_energy_range_uj": max_range}})
    gpu_w = 100 + (700 - 100) * 0.4
    scenario = write_scenario(tmp_path / "sim.yaml", {"gpus": [
        {"name": "NVIDIA H100 80GB HBM3", "idle_w": 100, "max_w": 700,
         "processes": [{"pid": 4242, "memory_gib": 8, "sm_util": 40}]}]})
    d = start_daemon(tmp_path, "--sample.interval=1s", f"--path.sysfs={sysfs}",
                     "--gpu.backend=simulated", f"--gpu.simulation-file={scenario}")
    prom = start_prometheus(tmp_path, [f"127.0.0.1:{d.port}"])
    written = {"uj": 0}

    def writer():  # 50 W in 0.1 s steps of 5 J, for 12 s
        raw = 90_000_000
        for _ in range(120):
            raw = (raw + 5_000_000) % max_range
            written["uj"] += 5_000_000
            set_energy(sysfs, "intel-rapl:0", raw)
            time.sleep(0.1)

    try:
        t = threading.Thread(target=writer)
        t.start()
        t.join()
        time.sleep(3)  # two more samples and a scrape after the writer stopped
        true_j = written["uj"] / 1e6
        deadline = time.time() + 30
        got = 0.0
        while time.time() < deadline:
            res = prom.query('wattprint_cpu_energy_joules_total{method="rapl",domain="package"}')
            got = float(res[0]["value"][1]) if res else 0.0
            if abs(got - true_j) <= 0.001 * true_j:
                break
            time.sleep(0.5)
        assert got == pytest.approx(true_j, rel=0.001), f"RAPL via Prometheus {got} J vs true {true_j} J"
        energy = _series(prom, "wattprint_gpu_energy_joules_total[30s]")
        stamps = _series(prom, "wattprint_last_sample_timestamp_seconds[30s]")
        assert len(energy) >= 10 and [t for t, _ in energy] == [t for t, _ in stamps]
        (_, e0), (_, e1) = energy[0], energy[-1]
        (_, s0), (_, s1) = stamps[0], stamps[-1]
        assert (e1 - e0) / (s1 - s0) == pytest.approx(gpu_w, rel=0.005)
        up = prom.query('wattprint_collector_up{collector="gpu"}')
        assert up and up[0]["value"][1] == "1"
        info = prom.query('wattprint_gpu_info{backend="simulated"}')
        assert len(info) == 1, "a simulated GPU must say so in its metrics"
    finally:
        prom.stop()
        d.stop()
