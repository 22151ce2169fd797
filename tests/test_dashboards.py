"""The generated Grafana dashboards (dashboards/*.json, from dashboards/generate.py): current,
valid for the Grafana 11.6 schema (grafana-foundation-sdk round trip), every panel with a unit and
a query, every name a query uses known to the catalogue or the rules file, variables and
datasource as the compose quick start needs them, and a preview per dashboard.

That every query returns data against a real stack is tests/integration/test_dashboard_queries.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exporter import catalogue, rules
from support import ROOT

sdk = pytest.importorskip("grafana_foundation_sdk", reason="pip install 'grafana-foundation-sdk==1769699379!11.6.0'")
from grafana_foundation_sdk.cog.encoder import JSONEncoder  # noqa: E402
from grafana_foundation_sdk.models.dashboard import Dashboard  # noqa: E402

DASHBOARDS = ROOT / "dashboards"
GENERATE = DASHBOARDS / "generate.py"
PREVIEWS = DASHBOARDS / "previews"
FILES = sorted(DASHBOARDS.glob("*.json"))
BOARDS = {p.name: json.loads(p.read_text()) for p in FILES}
PROVISIONED = ROOT / "deploy" / "compose" / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"

RECORDED = {r["record"] for r in rules.recording_rules()}
STANDARD = {"ALERTS", "up"}  # Prometheus's own series; process_* are prometheus-client's
ALERT_LABELS = {"alertname", "alertstate", "severity", "reason"}
# the cluster: an external label (docs/fleet.md); node: the Helm chart's scrape config relabels the
# pod's node name into it
TARGET_LABELS = {"instance", "job", "node", rules.DEFAULT_CLUSTER_LABEL}
KNOWN_LABELS = ({lab for m in catalogue.METRICS for lab in m.labels} | TARGET_LABELS | ALERT_LABELS
                | set(rules.DERIVED_LABELS))
PANEL_TYPES = {"row", "timeseries", "stat", "bargauge", "table"}
UNITS = {"watt", "joule", "massg", "masst", "kwatth", "s", "bytes", "percentunit", "none", "reqps", "si:g/h",
         "suffix:g/kWh", "suffix:tokens/s"}
VARIABLES = {"cluster", "namespace", "endpoint", "model"}
CATCH_ALL = "unallocated|system|overflow"  # the catch_all variable's default: the ranked tables leave them out


def panels(board: dict) -> list[dict]:
    return [p for p in board["panels"] if p["type"] != "row"]


def queries() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) of every query."""
    return [(name, p["title"], t["expr"]) for name, b in BOARDS.items() for p in panels(b) for t in p["targets"]]


def substituted(expr: str) -> str:
    """An expr as Prometheus would get it from Grafana (template variables filled in)."""
    expr = re.sub(r"\$\{?(cluster|node|namespace|endpoint|model|instance)\}?", ".*", expr)
    expr = re.sub(r"\$\{?catch_all\}?", CATCH_ALL, expr)
    return expr.replace("$__rate_interval", "1m").replace("$__range", "6h")


def test_the_dashboards_exist():
    assert set(BOARDS) == {"wattprint-fleet-overview.json", "wattprint-endpoint-detail.json",
                           "wattprint-node-detail.json"}, "run: python dashboards/generate.py"


def test_json_is_current():
    """`generate.py --check` (what CI runs) passes: the committed JSON is what the code generates."""
    out = subprocess.run([sys.executable, str(GENERATE), "--check"], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr + "\nrun: python dashboards/generate.py"


def test_check_reports_a_stale_file(tmp_path):
    for name in BOARDS:
        (tmp_path / name).write_text((DASHBOARDS / name).read_text())
    stale = tmp_path / "wattprint-node-detail.json"
    stale.write_text(stale.read_text().replace("Node detail", "Node detial"))
    out = subprocess.run([sys.executable, str(GENERATE), "--check", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "wattprint-node-detail.json" in out.stderr, out.stdout + out.stderr


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_round_trips_through_the_sdk(name):
    text = (DASHBOARDS / name).read_text()
    model = Dashboard.from_json(json.loads(text))
    assert json.dumps(model, cls=JSONEncoder, indent=2, ensure_ascii=False) + "\n" == text


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_dashboard_shape(name):
    b = BOARDS[name]
    assert b["schemaVersion"] == 41, "the Grafana 11.6 flavour of grafana-foundation-sdk"
    assert re.fullmatch(r"wattprint-[a-z-]+", b["uid"]) and len(b["uid"]) <= 40 and b["uid"] == Path(name).stem
    assert b["title"].startswith("Wattprint / ")
    ids = [p["id"] for p in b["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for p in b["panels"]:
        assert p["type"] in PANEL_TYPES, f"{p['title']}: {p['type']} (modern panels only)"
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine


def test_uids_and_titles_are_unique():
    assert len({b["uid"] for b in BOARDS.values()}) == len(BOARDS)
    assert len({b["title"] for b in BOARDS.values()}) == len(BOARDS)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_panel_has_a_unit_and_a_query(name):
    for p in panels(BOARDS[name]):
        unit = p["fieldConfig"]["defaults"].get("unit")
        assert unit in UNITS, f"{p['title']}: unit {unit!r}"
        for o in p["fieldConfig"]["overrides"]:
            for prop in o["properties"]:
                if prop["id"] == "unit":
                    assert prop["value"] in UNITS, f"{p['title']}: override unit {prop['value']!r}"
        assert p["targets"], f"{p['title']}: no query"
        for t in p["targets"]:
            assert t["expr"].strip() and t["refId"], p["title"]
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p.get("description"), f"{p['title']}: say what the panel shows"


@pytest.mark.parametrize("where,title,expr", queries(), ids=[f"{w[10:-5]}:{t}:{i}" for i, (w, t, _) in enumerate(queries())])
def test_every_name_in_a_query_is_known(where, title, expr):
    """Every metric is in the catalogue, a recording rule of rules/wattprint.rules.yaml, or a
    standard one (ALERTS, up, process_*); every label is one of theirs."""
    e = substituted(expr)
    for name in rules.metric_names(e):
        assert (name in catalogue.BY_NAME or name in RECORDED or name in STANDARD
                or name.startswith("process_")), f"{title}: unknown metric {name!r} in {expr}"
    labels = rules.grouping_labels(e) | {lab for _, keys in rules.selector_labels(e) for lab in keys}
    assert labels <= KNOWN_LABELS, f"{title}: unknown labels {labels - KNOWN_LABELS} in {expr}"


def test_the_name_check_catches_a_typo():
    e = substituted('sum by (endpoint) (rate(wattprint_endpoint_energy_joule_total{model=~"$model"}[5m]))')
    assert "wattprint_endpoint_energy_joule_total" in rules.metric_names(e)
    assert "wattprint_endpoint_energy_joule_total" not in catalogue.BY_NAME


def test_metric_names_come_from_the_catalogue():
    """The generator names metrics through exporter.catalogue and rules through the rules file,
    never as string literals."""
    src = GENERATE.read_text()
    literals = re.findall(r'["\'](wattprint[_:][a-z0-9_:]+)', src)
    assert not literals, f"retyped names in generate.py: {literals}"


def test_the_brief_is_covered():
    """The figures the dashboards exist for are all there."""
    text = {name: json.dumps(b) for name, b in BOARDS.items()}
    fleet, endpoint, node = (text[f"wattprint-{n}.json"] for n in ("fleet-overview", "endpoint-detail", "node-detail"))
    for needle in ("wattprint:endpoint_power_watts:5m", "wattprint:endpoint_co2e_grams_per_second:5m",
                   "wattprint:endpoint_co2e_grams_per_request:5m",
                   "wattprint:endpoint_co2e_grams_per_1k_generation_tokens:5m", "wattprint_model_training_co2e_grams",
                   "wattprint_counterfactual_co2e_grams_total", "wattprint_grid_intensity_grams_per_kwh",
                   "wattprint:endpoint_idle_share:5m", "topk("):
        assert needle in fleet, needle
    for needle in ("wattprint:endpoint_component_power_watts:5m", "wattprint:endpoint_joules_per_1k_generation_tokens:5m",
                   "wattprint:endpoint_requests_per_second:5m", "wattprint_endpoint_budget_grams_per_request",
                   'ALERTS{alertname=~\\"Wattprint.*\\"', "wattprint:endpoint_marginal_joules_per_token:5m",
                   "wattprint:endpoint_marginal_joules_per_token_stderr:5m",
                   "wattprint:endpoint_marginal_co2e_grams_per_request:5m",
                   "wattprint:endpoint_idle_co2e_grams_per_request:5m", "wattprint_endpoint_energy_model_state"):
        assert needle in endpoint, needle
    for needle in ("wattprint_gpu_energy_joules_total", "wattprint_cpu_energy_joules_total", "domain, method",
                   "wattprint_collector_up", "wattprint_sample_duration_seconds", "process_cpu_seconds_total",
                   "process_resident_memory_bytes", "wattprint_engine_scrape_up", "unallocated|system"):
        assert needle in node, needle


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_variables(name):
    b = BOARDS[name]
    variables = {v["name"]: v for v in b["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    # the compose quick start provisions uid "prometheus": the default selects it
    (provisioned,) = yaml.safe_load(PROVISIONED.read_text())["datasources"]
    assert ds["current"]["value"] == provisioned["uid"] == "prometheus"
    for var in VARIABLES | ({"node", "instance"} if "node" in name else set()):
        v = variables[var]
        assert v["type"] == "query" and v["multi"] and v["includeAll"], var
        assert v["allValue"] == ".*", f"{var}: 'All' must match an empty label (namespace outside Kubernetes)"
        assert v["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert v["query"].startswith("label_values(")
        assert rules.metric_names(substituted(v["query"][len("label_values("):-1].rsplit(",", 1)[0])) <= set(catalogue.BY_NAME)
    for p in panels(b):
        for t in p["targets"]:
            used = set(re.findall(r"\$\{?(\w+)", t["expr"])) - {"__rate_interval", "__range"}
            assert used <= set(variables), f"{p['title']}: undefined variables {used - set(variables)}"


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not found (Debian package prometheus)")
def test_every_query_parses(tmp_path):
    """promtool parses every query (as a recording rule); the integration test runs them."""
    doc = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:query_{i}:check", "expr": substituted(e)} for i, (_, _, e) in enumerate(queries())]}]}
    f = tmp_path / "queries.rules.yaml"
    f.write_text(yaml.safe_dump(doc))
    out = subprocess.run([PROMTOOL, "check", "rules", str(f)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_preview_exists(name):
    png = PREVIEWS / (Path(name).stem + ".png")
    assert png.is_file(), f"no {png.relative_to(ROOT)}: run scripts/render_previews.py --run"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size < 400_000


def _unit(panel: dict, ref: str, column: str | None) -> str:
    """The unit Grafana shows a query's values in: an override by refId or table column, else the panel's."""
    for o in panel["fieldConfig"]["overrides"]:
        m = o["matcher"]
        if (m["id"] == "byFrameRefID" and m["options"] == ref) or (m["id"] == "byName" and m["options"] == column):
            for prop in o["properties"]:
                if prop["id"] == "unit":
                    return prop["value"]
    return panel["fieldConfig"]["defaults"]["unit"]


def _column(panel: dict, ref: str) -> str | None:
    if panel["type"] != "table":
        return None
    rename = next(tr["options"]["renameByName"] for tr in panel["transformations"] if tr["id"] == "organize")
    return rename.get("Value" if len(panel["targets"]) == 1 else f"Value #{ref}")


def test_tonnes_and_kilowatt_hours_where_a_reader_expects_them():
    """Training footprints and month/year CO2e in t (Grafana's masst never rescales: no "420 Mg"),
    energy per month/year in kWh: the query divides by 1e6 (g → t) or 3.6e6 (J → kWh) exactly where
    the unit says so."""
    seen = set()
    for b in BOARDS.values():
        for p in panels(b):
            for t in p["targets"]:
                unit = _unit(p, t["refId"], _column(p, t["refId"]))
                e = t["expr"]
                if "wattprint_model_training_co2e_grams" in e and "/ on (model)" not in e and "/ (" not in e:
                    assert e.endswith("/ 1e+06") and unit == "masst", (p["title"], e, unit)
                    seen.add("training")
                if e.endswith("/ 1e+06"):
                    assert unit == "masst", (p["title"], unit)
                if e.endswith("/ 3.6e+06"):
                    assert unit == "kwatth", (p["title"], unit)
                    seen.add("kWh")
    assert seen == {"training", "kWh"}


def test_month_and_year_come_from_the_rollups():
    """Panels over this month / this year use the panel time override (now/M, now/y) and sum the
    hourly rollups over $__range, never increase() over the raw counters."""
    fleet = BOARDS["wattprint-fleet-overview.json"]
    periods = [p for p in panels(fleet) if p.get("timeFrom")]
    assert {p["timeFrom"] for p in periods} == {"now/M", "now/y"} and len(periods) >= 9
    for p in periods:
        for t in p["targets"]:
            assert "increase(" not in t["expr"], p["title"]
            if "wattprint_model_training_co2e_grams" not in t["expr"] or "sum_over_time" in t["expr"]:
                assert re.search(r"sum_over_time\(wattprint:endpoint_[a-z0-9_]+:increase1h\{[^}]*\}\[\$__range\]\)",
                                 t["expr"]), (p["title"], t["expr"])


def test_ranked_table_leaves_out_the_catch_all_series_by_default():
    fleet = BOARDS["wattprint-fleet-overview.json"]
    var = next(v for v in fleet["templating"]["list"] if v["name"] == "catch_all")
    assert var["type"] == "custom" and var["current"]["value"] == CATCH_ALL
    assert {o["value"] for o in var["options"]} == {CATCH_ALL, "^$"}
    ranked = next(p for p in panels(fleet) if p["title"].startswith("Endpoints ranked by CO2e per request"))
    assert all('endpoint!~"$catch_all"' in t["expr"] for t in ranked["targets"])
    assert ranked["options"]["sortBy"] == [{"displayName": "CO2e per request (1h)", "desc": True}]
    # the default leaves them out: a query as Prometheus gets it excludes every catch-all name
    e = substituted(ranked["targets"][0]["expr"])
    assert f'endpoint!~"{CATCH_ALL}"' in e


def test_the_same_model_across_gpu_types_and_regions_needs_no_join_in_a_panel():
    """The comparison panels read the wattprint:model_* rules (the join is done once, in the rules);
    only "Nodes serving it" joins, with the one-series-per-node placement info."""
    text = json.dumps(BOARDS)
    for name in ("wattprint:model_co2e_grams_per_request:1h", "wattprint:model_joules_per_request:1h",
                 "wattprint:model_co2e_grams_per_request:5m", "wattprint:node_placement:info"):
        assert name in text, name
    for b in BOARDS.values():
        for p in panels(b):
            for t in p["targets"]:
                if "wattprint:model_" in t["expr"]:
                    assert "group_left" not in t["expr"] and "wattprint_gpu_info" not in t["expr"], p["title"]


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_time_series_legends_are_sorted_tables_with_mean_and_last(name):
    for p in panels(BOARDS[name]):
        if p["type"] == "timeseries":
            leg = p["options"]["legend"]
            assert leg["displayMode"] == "table" and leg["calcs"] == ["mean", "lastNotNull"], p["title"]
            assert leg["sortBy"] == "Mean" and leg["sortDesc"] is True, p["title"]


def test_drill_down_links_fleet_to_endpoint_to_node():
    """Every data link opens a Wattprint dashboard, sets only variables that dashboard has, and reads
    only columns (tables) or labels (bar gauges) its panel's queries keep."""
    by_uid = {b["uid"]: b for b in BOARDS.values()}
    pairs = set()
    for b in BOARDS.values():
        for p in panels(b):
            for link in p["fieldConfig"]["defaults"].get("links") or []:
                m = re.match(r"/d/([a-z-]+)/\1\?(.*)$", link["url"])
                assert m and m.group(1) in by_uid, link["url"]
                target = by_uid[m.group(1)]
                names = {v["name"] for v in target["templating"]["list"]}
                params = m.group(2).split("&")
                assert "${__url_time_range}" in params and "${datasource:queryparam}" in params
                for prm in params:
                    if prm.startswith("var-"):
                        assert prm[4:].split("=")[0] in names, (p["title"], prm)
                    elif qp := re.fullmatch(r"\$\{(\w+):queryparam\}", prm):
                        assert qp.group(1) in names and qp.group(1) in {v["name"] for v in b["templating"]["list"]}
                for kind, label in re.findall(r"\$\{__(data\.fields|field\.labels)\.(\w+)\}", link["url"]):
                    exprs = " ".join(t["expr"] for t in p["targets"])
                    kept = rules.grouping_labels(exprs) | {"endpoint", "model"} & set(re.findall(r"\w+", exprs))
                    assert label in kept, (p["title"], label)
                    if kind == "data.fields":
                        assert p["type"] == "table", p["title"]
                    else:
                        assert p["type"] in ("bargauge", "timeseries", "stat"), p["title"]
                pairs.add((b["uid"], target["uid"]))
    assert ("wattprint-fleet-overview", "wattprint-endpoint-detail") in pairs
    assert ("wattprint-endpoint-detail", "wattprint-node-detail") in pairs


def test_node_detail_selects_by_node_with_an_instance_fallback():
    node = BOARDS["wattprint-node-detail.json"]
    variables = {v["name"]: v for v in node["templating"]["list"]}
    assert ", node)" in variables["node"]["query"] and 'node=~"$node"' in variables["instance"]["query"]
    for p in panels(node):
        for t in p["targets"]:
            for name, keys in rules.selector_labels(t["expr"]):
                if name.startswith(("wattprint_", "process_")):
                    assert {"cluster", "node", "instance"} <= keys, (p["title"], name)
