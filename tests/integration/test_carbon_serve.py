"""Carbon in the running daemon: a live provider (fake Electricity Maps on 127.0.0.1), CO2e
counters that follow energy × intensity, `check` showing region/provider/intensity/source, and
the provider's secret nowhere in metrics, logs or check output."""

import json
import subprocess
import sys
import time

import pytest

from fakes.carbon_apis import EM_TOKEN, ElectricityMapsFake
from fakes.server import Background
from support import ROOT, parse_metrics, start_daemon, value

pytestmark = pytest.mark.integration


def config(tmp_path, url):
    cfg = tmp_path / "wattprint.yaml"
    cfg.write_text(f"""
carbon:
  region: DE
  counterfactual_regions: [europe-north1, FR]
  training_co2e_tonnes: {{"meta-llama/Llama-3.1-8B": 420}}
  providers:
    - {{type: electricitymaps, zone: DE, token_env: EM_TOKEN, base_url: "{url}"}}
""")
    return cfg


def test_live_intensity_drives_co2e_and_secret_stays_secret(tmp_path):
    api = Background(ElectricityMapsFake())
    api.fake.value = 300.0
    env = {"EM_TOKEN": EM_TOKEN}
    try:
        cfg = config(tmp_path, api.fake.url)
        d = start_daemon(tmp_path, "--sample.interval=0.5s", "--gpu.backend=none", f"--config.file={cfg}", env=env)
        try:
            deadline = time.time() + 20
            while time.time() < deadline:
                m = parse_metrics(d.get())
                if value(m, "wattprint_carbon_info", provider="electricitymaps"):
                    break
                time.sleep(0.3)
            m0 = parse_metrics(d.get())
            time.sleep(3)
            m1 = parse_metrics(d.get())
            text = d.get()
        finally:
            log = d.stop()
        check = subprocess.run([sys.executable, "-m", "exporter", "check", f"--config.file={cfg}"],
                               capture_output=True, text=True, cwd=ROOT, env={**__import__("os").environ, **env})
        check_json = subprocess.run([sys.executable, "-m", "exporter", "check", "--output", "json",
                                     f"--config.file={cfg}"], capture_output=True, text=True, cwd=ROOT,
                                    env={**__import__("os").environ, **env})
    finally:
        api.close()
    assert value(m1, "wattprint_carbon_info", provider="electricitymaps", zone="DE") == 1
    assert value(m1, "wattprint_grid_intensity_grams_per_kwh", provider="electricitymaps", signal="average") == 300
    assert value(m1, "wattprint_grid_intensity_grams_per_kwh", provider="static") == pytest.approx(381.0, abs=60)
    d_energy = value(m1, "wattprint_node_energy_joules_total") - value(m0, "wattprint_node_energy_joules_total")
    d_co2e = (value(m1, "wattprint_node_co2e_grams_total", scope="operational")
              - value(m0, "wattprint_node_co2e_grams_total", scope="operational"))
    assert d_energy > 0 and d_co2e == pytest.approx(d_energy * 1.0 * 300 / 3.6e6, rel=1e-6)
    endpoints = value(m1, "wattprint_endpoint_co2e_grams_total", scope="operational")
    assert endpoints == pytest.approx(value(m1, "wattprint_node_co2e_grams_total", scope="operational"), rel=1e-9)
    cf = value(m1, "wattprint_counterfactual_co2e_grams_total", region="gcp:europe-north1")
    assert 0 < cf < endpoints, "europe-north1 is cleaner than Germany"
    assert value(m1, "wattprint_model_training_co2e_grams", model="meta-llama/Llama-3.1-8B") == 420e6
    # check names region, provider, intensity and source
    assert check.returncode == 0, check.stderr
    assert "region country:DEU" in check.stdout and "live from electricitymaps (zone DE" in check.stdout
    assert "300.0 gCO2e/kWh" in check.stdout and "source: Electricity Maps" in check.stdout
    rep = json.loads(check_json.stdout)["carbon"]
    assert rep["provider"] == "electricitymaps" and rep["grams_per_kwh"] == 300
    for where, blob in (("metrics", text), ("log", log), ("check", check.stdout + check.stderr),
                        ("check json", check_json.stdout)):
        assert EM_TOKEN not in blob, f"the provider token leaked into {where}"
