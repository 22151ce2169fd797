"""`wattprint report` against a real Prometheus holding 40 days of a two-cluster fleet.

The data are written as OpenMetrics text with timestamps and loaded with
`promtool tsdb create-blocks-from openmetrics` (backfill), in two scenarios: one TSDB holding the
hourly rollups (`wattprint:*:increase1h`, one point at :30 of every hour, as a rule group with
`interval: 1h` writes them), one holding only the raw counters (two exporters per endpoint, scraped
every 30 min, one of them restarting mid-period). Every endpoint's hourly increases are known
(they change day by day), so each figure the report prints is checked against what was written,
within 1 %. Then `python -m exporter report` runs as a subprocess, once per format and case."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import PROMTOOL, ROOT, free_port, start_prometheus

pytestmark = pytest.mark.integration

HOUR, DAY = 3600, 86400
SCRAPE = 1800  # raw counters: one sample every 30 minutes
DAYS = 40
# (cluster, namespace, endpoint, model, exporters): hourly increases, split evenly over the exporters
ENDPOINTS = {
    ("eu", "serving", "chat", "llama"): dict(
        exporters=2, gpu_active=3.6e6, gpu_idle=0.9e6, cpu_active=0.18e6, cpu_idle=0.0, operational=300.0,
        embodied=13.2, requests=1000.0, prompt=200e3, generation=50e3),
    ("us", "serving", "chat", "llama"): dict(
        exporters=2, gpu_active=7.2e6, gpu_idle=0.36e6, cpu_active=0.36e6, cpu_idle=0.0, operational=100.0,
        embodied=26.4, requests=4000.0, prompt=400e3, generation=100e3),
    ("eu", "serving", "embed", "bge"): dict(
        exporters=1, gpu_active=0.36e6, gpu_idle=0.36e6, cpu_active=0.036e6, cpu_idle=0.0, operational=50.0,
        embodied=13.2, requests=5000.0, prompt=1e6, generation=0.0),
    ("us", "", "unallocated", ""): dict(
        exporters=1, gpu_active=0.0, gpu_idle=0.252e6, cpu_active=0.0, cpu_idle=0.0, operational=3.5,
        embodied=13.2, requests=0.0, prompt=0.0, generation=0.0),
}
# (family, label name, label value, profile key)
SERIES = [("energy", "component=gpu,mode=active", "gpu_active"), ("energy", "component=gpu,mode=idle", "gpu_idle"),
          ("energy", "component=cpu,mode=active", "cpu_active"), ("energy", "component=cpu,mode=idle", "cpu_idle"),
          ("co2e", "scope=operational", "operational"), ("co2e", "scope=embodied", "embodied"),
          ("requests", "", "requests"), ("tokens", "kind=prompt", "prompt"), ("tokens", "kind=generation", "generation")]
RAW = {"energy": "wattprint_endpoint_energy_joules", "co2e": "wattprint_endpoint_co2e_grams",
       "requests": "wattprint_endpoint_requests", "tokens": "wattprint_endpoint_tokens"}
ROLLUP = {"energy": "wattprint:endpoint_energy_joules:increase1h", "co2e": "wattprint:endpoint_co2e_grams:increase1h",
          "requests": "wattprint:endpoint_requests:increase1h", "tokens": "wattprint:endpoint_tokens:increase1h"}
CARBON = {"eu": dict(region="europe-west4", provider="static", zone="NL", source="google-2024", how="configured"),
          "us": dict(region="aws:us-east-1", provider="electricitymaps", zone="US-MIDA-PJM", source="live", how="imds")}
PUE = {"eu": ("gcp", 1.1), "us": ("aws", 1.135)}
TRAINING_LLAMA = 2.04e9  # 2,040 t
RESTART = 20 * DAY + 12 * HOUR  # eu chat exporter 1 restarts: its counters start again from 0


def factor(h: int) -> float:
    """Day-by-day change of every hourly increase (a weekly pattern)."""
    return 1.0 + 0.1 * ((h * HOUR // DAY) % 7)


def cum(rate: float, t: float) -> float:
    """What a counter growing by ``rate × factor(h)`` in hour h has counted by ``t`` (s from t0)."""
    h, frac = divmod(t, HOUR)
    return rate * (sum(factor(i) for i in range(int(h))) + frac / HOUR * factor(int(h)))


def labels(d: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in d.items()) + "}"


def extra(spec: str) -> dict[str, str]:
    return dict(p.split("=") for p in spec.split(",")) if spec else {}


def openmetrics(t0: float, rollups: bool) -> str:
    out: list[str] = []
    for fam, name in (ROLLUP if rollups else RAW).items():
        out.append(f"# TYPE {name} {'gauge' if rollups else 'counter'}")
        for (cluster, ns, ep, model), p in ENDPOINTS.items():
            base = dict(cluster=cluster, namespace=ns, endpoint=ep, model=model)
            for f, spec, key in SERIES:
                if f != fam:
                    continue
                if rollups:
                    lab = labels({**base, **extra(spec)})
                    for h in range(1, DAYS * 24):
                        t = h * HOUR + HOUR / 2
                        out.append(f"{name}{lab} {cum(p[key], t) - cum(p[key], t - HOUR):.6f} {t0 + t:.0f}")
                    continue
                for i in range(p["exporters"]):
                    lab = labels({**base, **extra(spec), "instance": f"{cluster}-node{i}:10066", "job": "wattprint"})
                    rate = p[key] / p["exporters"]
                    restarts = cluster == "eu" and ep == "chat" and i == 1
                    for t in range(0, DAYS * DAY + 1, SCRAPE):
                        v = cum(rate, t) - (cum(rate, RESTART - SCRAPE) if restarts and t >= RESTART else 0.0)
                        out.append(f"{name}_total{lab} {v:.6f} {t0 + t}")
    gauges = [("wattprint_carbon_info", lambda c: CARBON[c], 1.0),
              ("wattprint_pue_ratio", lambda c: {"source": PUE[c][0]}, None),
              ("wattprint_embodied_grams_per_gpu_second", lambda c: {}, 0.003666)]
    for name, lab, val in gauges:
        out.append(f"# TYPE {name} gauge")
        for cluster in ("eu", "us"):
            full = labels({"cluster": cluster, **lab(cluster), "instance": f"{cluster}-node0:10066", "job": "wattprint"})
            v = PUE[cluster][1] if val is None else val
            out += [f"{name}{full} {v} {t0 + t}" for t in range(0, DAYS * DAY + 1, SCRAPE)]
    out.append("# TYPE wattprint_model_training_co2e_grams gauge")
    lab = labels({"cluster": "eu", "model": "llama", "instance": "eu-node0:10066", "job": "wattprint"})
    out += [f"wattprint_model_training_co2e_grams{lab} {TRAINING_LLAMA} {t0 + t}" for t in range(0, DAYS * DAY + 1, SCRAPE)]
    return "\n".join(out + ["# EOF"]) + "\n"


def expected(a: float, b: float, keep=lambda key: True, by=("cluster", "namespace", "endpoint", "model")) -> dict:
    """The figures written between ``a`` and ``b`` (s from t0), summed by ``by``."""
    out: dict[tuple, dict[str, float]] = {}
    names = ("cluster", "namespace", "endpoint", "model")
    for key, p in ENDPOINTS.items():
        if not keep(key):
            continue
        g = out.setdefault(tuple(dict(zip(names, key))[k] for k in by), dict.fromkeys(
            ("energy", "idle", "operational", "embodied", "requests", "generation"), 0.0))
        for _, spec, k in SERIES:
            inc = cum(p[k], b) - cum(p[k], a)
            if k.startswith(("gpu", "cpu")):
                g["energy"] += inc
                g["idle"] += inc if k.endswith("idle") else 0.0
            elif k in g:
                g[k] += inc
    return out


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Two real Prometheus servers on backfilled TSDBs (rollups; raw counters) and one empty."""
    assert PROMTOOL, "promtool (Debian package prometheus) is not installed"
    tmp = tmp_path_factory.mktemp("report")
    t0 = float((int(time.time()) // DAY - DAYS - 2) * DAY)  # midnight UTC, 42 days ago
    servers = {}
    try:
        for name in ("rollups", "raw"):
            om = tmp / f"{name}.om"
            om.write_text(openmetrics(t0, name == "rollups"))
            out = subprocess.run([PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", "--quiet",
                                  "--max-block-duration=1000h", str(om), str(tmp / f"{name}-tsdb")],
                                 capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stdout + out.stderr
            servers[name] = start_prometheus(tmp, [], tsdb=tmp / f"{name}-tsdb",
                                             args=["--storage.tsdb.retention.time=10y"])
        servers["empty"] = start_prometheus(tmp, [])
        yield t0, servers
    finally:
        for p in servers.values():
            p.stop()


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def run(prom, *args: str) -> subprocess.CompletedProcess:
    url = prom if isinstance(prom, str) else f"http://127.0.0.1:{prom.port}"
    return subprocess.run([sys.executable, "-m", "exporter", "report", f"--prometheus.url={url}", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def period(t0: float) -> tuple[float, float, list[str]]:
    a, b = 2 * DAY, 34 * DAY  # 32 days
    return a, b, [f"--from={iso(t0 + a)}", f"--to={iso(t0 + b)}"]


def report_json(prom, *args: str) -> dict:
    out = run(prom, *args, "--output=json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def check_rows(doc: dict, want: dict, by=("cluster", "namespace", "endpoint", "model")) -> None:
    got = {tuple(r[k] for k in by): r for r in doc["rows"]}
    assert set(got) == set(want)
    for key, w in want.items():
        r = got[key]
        co2e = w["operational"] + w["embodied"]
        assert r["energy_joules"] == pytest.approx(w["energy"], rel=0.01), key
        assert r["co2e_operational_grams"] == pytest.approx(w["operational"], rel=0.01), key
        assert r["co2e_embodied_grams"] == pytest.approx(w["embodied"], rel=0.01), key
        assert r["co2e_grams"] == pytest.approx(co2e, rel=0.01), key
        assert r["requests"] == pytest.approx(w["requests"], rel=0.01), key
        assert r["generation_tokens"] == pytest.approx(w["generation"], rel=0.01), key
        assert r["idle_share"] == pytest.approx(w["idle"] / w["energy"], rel=0.01), key
        if w["requests"]:
            assert r["grams_per_request"] == pytest.approx(co2e / w["requests"], rel=0.01), key
        else:
            assert r["grams_per_request"] is None
        if w["generation"]:
            assert r["grams_per_1k_generation_tokens"] == pytest.approx(1000 * co2e / w["generation"], rel=0.01)
        else:
            assert r["grams_per_1k_generation_tokens"] is None
    total = sum(w["operational"] + w["embodied"] for w in want.values())
    assert doc["totals"]["co2e_grams"] == pytest.approx(total, rel=0.01)
    assert doc["totals"]["requests"] == pytest.approx(sum(w["requests"] for w in want.values()), rel=0.01)


@pytest.mark.parametrize("source", ["rollups", "raw"])
def test_json_figures_match_what_was_written(fleet, source):
    t0, servers = fleet
    a, b, flags = period(t0)
    doc = report_json(servers[source], *flags)
    assert doc["source"] == source
    assert (doc["from"], doc["to"]) == (iso(t0 + a), iso(t0 + b))
    # a rollup point at :30 holds the hour before it: the points in the period cover it shifted by 30 min
    shift = HOUR / 2 if source == "rollups" else 0.0
    check_rows(doc, expected(a - shift, b - shift))
    rows = {(r["cluster"], r["endpoint"]): r for r in doc["rows"]}
    assert rows[("us", "unallocated")]["catch_all"] is True and rows[("eu", "chat")]["catch_all"] is False
    llama = rows[("eu", "chat")]
    assert llama["training_co2e_grams"] == TRAINING_LLAMA
    assert llama["training_share"] == pytest.approx(llama["co2e_grams"] / TRAINING_LLAMA)
    assert rows[("eu", "embed")]["training_share"] is None
    assert doc["factors"]["carbon"] == [{"cluster": c, **CARBON[c]} for c in ("eu", "us")]
    assert [(p["cluster"], p["source"], p["min"], p["max"]) for p in doc["factors"]["pue"]] == \
        [("eu", "gcp", 1.1, 1.1), ("us", "aws", 1.135, 1.135)]


def test_clusters_stay_apart_with_cluster_and_merge_without(fleet):
    t0, servers = fleet
    a, b, flags = period(t0)
    shift = HOUR / 2
    apart = report_json(servers["rollups"], *flags, "--by=cluster,endpoint")
    check_rows(apart, expected(a - shift, b - shift, by=("cluster", "endpoint")), by=("cluster", "endpoint"))
    merged = report_json(servers["rollups"], *flags, "--by=endpoint")
    check_rows(merged, expected(a - shift, b - shift, by=("endpoint",)), by=("endpoint",))
    assert [r["endpoint"] for r in merged["rows"]] == ["chat", "embed", "unallocated"]
    assert merged["rows"][0]["cluster"] is None  # not grouped by


def test_markdown_names_the_method_and_factors(fleet):
    t0, servers = fleet
    _, _, flags = period(t0)
    out = run(servers["rollups"], *flags)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith("# Wattprint emissions statement\n")
    assert "| cluster | namespace | endpoint | model | energy kWh |" in text
    assert "unallocated †" in text and "| **total** |" in text
    assert "rollups (wattprint:*:increase1h" in text and "(32 days)" in text
    for needle in ("location-based", "provider=electricitymaps", "source=google-2024", "1.135 (cluster=us, source=aws)",
                   "3.67 mg/GPU-s", "ISO/IEC 21031", "g/request", "g/1k tokens"):
        assert needle in text, needle
    us_chat = next(line for line in text.splitlines() if line.startswith("| us | serving | chat |"))
    w = expected(2 * DAY - HOUR / 2, 34 * DAY - HOUR / 2)[("us", "serving", "chat", "llama")]
    cells = [c.strip() for c in us_chat.strip("|").split("|")]
    assert float(cells[4].replace(",", "")) == pytest.approx(w["energy"] / 3.6e6, rel=0.01)
    assert float(cells[11]) == pytest.approx((w["operational"] + w["embodied"]) / w["requests"], rel=0.01)
    print(text)


def test_csv_has_one_line_a_group_and_the_totals(fleet):
    t0, servers = fleet
    _, _, flags = period(t0)
    out = run(servers["raw"], *flags, "--output=csv")
    assert out.returncode == 0, out.stderr
    lines = list(csv.DictReader(io.StringIO(out.stdout)))
    doc = report_json(servers["raw"], *flags)
    assert [r["row"] for r in lines] == ["group"] * len(doc["rows"]) + ["total"]
    for line, row in zip(lines, doc["rows"]):
        assert (line["cluster"], line["endpoint"]) == (row["cluster"], row["endpoint"])
        assert float(line["co2e_grams"]) == pytest.approx(row["co2e_grams"])
        assert line["grams_per_request"] == ("" if row["grams_per_request"] is None else line["grams_per_request"])
    assert float(lines[-1]["co2e_grams"]) == pytest.approx(doc["totals"]["co2e_grams"])


def test_html_has_a_daily_chart_per_group_and_no_external_assets(fleet):
    t0, servers = fleet
    a, b, flags = period(t0)
    out = run(servers["raw"], *flags, "--output=html")
    assert out.returncode == 0, out.stderr
    page = out.stdout
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"<script|<link|<img|src=|url\(", page)
    assert page.count('<svg class="chart"') == 4
    days = re.findall(r"<title>(\d{4}-\d\d-\d\d): ([\d,.]+) (k?g) CO2e", page)
    assert len(days) == 4 * 32
    # eu/chat's bars, day by day: the sum of what was written that day
    eu_chat = days[:32]
    for i, (_, v, unit) in enumerate(eu_chat):
        w = expected(a + i * DAY, a + (i + 1) * DAY)[("eu", "serving", "chat", "llama")]
        got = float(v.replace(",", "")) * (1000 if unit == "kg" else 1)
        assert got == pytest.approx(w["operational"] + w["embodied"], rel=0.01), i


def test_exclude_catch_all_and_by_instance(fleet):
    t0, servers = fleet
    a, b, flags = period(t0)
    doc = report_json(servers["raw"], *flags, "--exclude-catch-all")
    check_rows(doc, expected(a, b, keep=lambda k: k[2] != "unallocated"))
    per_node = report_json(servers["raw"], *flags, "--by=instance,endpoint")
    assert {(r["instance"], r["endpoint"]) for r in per_node["rows"]} == {
        ("eu-node0:10066", "chat"), ("eu-node1:10066", "chat"), ("eu-node0:10066", "embed"),
        ("us-node0:10066", "chat"), ("us-node1:10066", "chat"), ("us-node0:10066", "unallocated")}
    # the restarted exporter's counters still add up to its half of eu/chat
    eu1 = next(r for r in per_node["rows"] if r["instance"] == "eu-node1:10066")
    w = expected(a, b)[("eu", "serving", "chat", "llama")]
    assert eu1["requests"] == pytest.approx(w["requests"] / 2, rel=0.01)


def test_auto_falls_back_to_raw_when_rollups_are_absent_and_says_so(fleet):
    t0, servers = fleet
    _, _, flags = period(t0)
    out = run(servers["raw"], *flags)
    assert out.returncode == 0, out.stderr
    assert "raw counters (no wattprint:endpoint_energy_joules:increase1h series in the period)" in out.stdout
    assert "increase() over the period" in out.stdout


def test_unreachable_prometheus_is_a_clear_error():
    url = f"http://127.0.0.1:{free_port()}"
    out = run(url, "--output=json")
    assert out.returncode == 1 and out.stdout == ""
    assert f"cannot reach Prometheus at {url}: connection refused" in out.stderr


def test_empty_range_is_a_clear_error(fleet):
    t0, servers = fleet
    for source in ("rollups", "raw"):
        out = run(servers[source], f"--from={iso(t0 - 30 * DAY)}", f"--to={iso(t0 - 20 * DAY)}")
        assert out.returncode == 1 and out.stdout == ""
        assert f"Prometheus at http://127.0.0.1:{servers[source].port} holds no wattprint data between " \
               f"{iso(t0 - 30 * DAY)} and {iso(t0 - 20 * DAY)}: the range is empty" in out.stderr


def test_prometheus_without_wattprint_metrics_is_a_clear_error(fleet):
    _, servers = fleet
    out = run(servers["empty"], "--from=-1d")
    assert out.returncode == 1 and out.stdout == ""
    assert f"Prometheus at http://127.0.0.1:{servers['empty'].port} has no wattprint metrics" in out.stderr


def test_bad_options_exit_2(fleet):
    _, servers = fleet
    for args, needle in ((["--by=pod"], "--by='pod': unknown label 'pod'"),
                         (["--from=last tuesday"], "--from='last tuesday': not a time"),
                         (["--from=-1d", "--to=-2d"], "empty period"),
                         (["--by=instance", "--source=rollups"], "--by=instance needs the raw counters")):
        out = run(servers["raw"], *args)
        assert out.returncode == 2 and needle in out.stderr, (args, out.stderr)


def test_rollups_of_the_projects_own_rules_agree_with_the_raw_counters(fleet, tmp_path):
    """The rule group wattprint.rollup.1h of rules/wattprint.rules.yaml, evaluated hour by hour over
    the raw counters by promtool's rule backfiller: the report from those rollups matches the one
    from the raw counters, and auto chooses the rollups."""
    import shutil

    import yaml

    groups = [g for g in yaml.safe_load((ROOT / "rules" / "wattprint.rules.yaml").read_text())["groups"]
              if g["name"] == "wattprint.rollup.1h"]
    if not groups:
        pytest.skip("rules/wattprint.rules.yaml has no wattprint.rollup.1h group yet")
    t0, servers = fleet
    (tmp_path / "rollup.yaml").write_text(yaml.safe_dump({"groups": groups}))
    a, b = 2 * DAY, 8 * DAY  # six days: the backfiller writes a block every 2 h, slow to write and load
    out = subprocess.run([PROMTOOL, "tsdb", "create-blocks-from", "rules", f"--start={int(t0 + a - DAY)}",
                          f"--end={int(t0 + b)}", f"--url=http://127.0.0.1:{servers['raw'].port}",
                          f"--output-dir={tmp_path / 'rules-out'}", str(tmp_path / "rollup.yaml")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    tsdb = tmp_path / "tsdb"
    for blocks in (servers["raw"].dir.parent / "raw-tsdb", tmp_path / "rules-out"):
        for block in blocks.iterdir():
            if (block / "meta.json").exists():
                shutil.copytree(block, tsdb / block.name)
    both = start_prometheus(tmp_path, [], tsdb=tsdb, args=["--storage.tsdb.retention.time=10y"])
    try:
        flags = [f"--from={iso(t0 + a)}", f"--to={iso(t0 + b)}"]
        auto, raw = report_json(both, *flags), report_json(both, *flags, "--source=raw")
    finally:
        both.stop()
    assert auto["source"] == "rollups" and raw["source"] == "raw"
    assert len(auto["rows"]) == len(raw["rows"]) == 4
    for r, w in zip(auto["rows"], raw["rows"]):
        assert (r["cluster"], r["endpoint"]) == (w["cluster"], w["endpoint"])
        for k in ("energy_joules", "co2e_grams", "requests", "generation_tokens"):
            assert r[k] == pytest.approx(w[k], rel=0.01), (r["endpoint"], k)
