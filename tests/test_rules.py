"""The recording and alert rules (rules/wattprint.rules.yaml): promtool accepts them, their unit
tests pass, every rule is covered by those tests, every alert is documented in docs/runbook.md,
and every name they use is in the metric catalogue."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exporter import catalogue, rules
from support import ROOT

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not found on PATH (Debian package `prometheus`; scripts/test.sh installs it)")

RULES = ROOT / "rules" / "wattprint.rules.yaml"
TESTS = sorted((ROOT / "rules" / "tests").glob("*.yaml"))
RUNBOOK = ROOT / "docs" / "runbook.md"

DOC = rules.load()
RECORDS = rules.recording_rules(DOC)
ALERTS = rules.alerting_rules(DOC)
RECORD_NAMES = {r["record"] for r in RECORDS}
ALERT_NAMES = sorted({a["alert"] for a in ALERTS})
# Labels Prometheus adds to every scraped series (the target's, and each cluster's external label
# in a global view), beside the catalogue's own.
TARGET_LABELS = {"instance", "job", rules.DEFAULT_CLUSTER_LABEL}
CATALOGUE_LABELS = {lab for m in catalogue.METRICS for lab in m.labels}
SEVERITIES = {"info", "warning", "critical"}


def _promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def _unit_tests() -> list[dict]:
    return [yaml.safe_load(p.read_text()) for p in TESTS]


def _annotation_queries(alert: dict) -> list[str]:
    """PromQL inside `{{ with printf "..." ... | query }}` in an alert's annotations."""
    out = []
    for text in (alert.get("annotations") or {}).values():
        for m in re.finditer(r'printf\s+"((?:[^"\\]|\\.)*)"', text):
            q = m.group(1).replace('\\"', '"').replace("%q", '"x"').replace("%s", "x")
            out.append(q)
    return out


def _exprs() -> list[tuple[str, str]]:
    """(rule name, PromQL) for every rule expression and every annotation query."""
    out = [(r.get("record") or r["alert"], r["expr"]) for r in RECORDS + ALERTS]
    out += [(a["alert"] + " annotation", q) for a in ALERTS for q in _annotation_queries(a)]
    return out


def _runbook_queries() -> list[str]:
    return re.findall(r"```promql\n(.*?)```", RUNBOOK.read_text(), flags=re.S)


def _github_anchor(heading: str) -> str:
    a = heading.strip().lower()
    a = re.sub(r"[^\w\- ]", "", a)
    return a.replace(" ", "-")


# --- promtool ------------------------------------------------------------------------------

@needs_promtool
def test_promtool_check_rules():
    out = _promtool("check", "rules", RULES)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(RECORDS) + len(ALERTS)} rules found" in out.stdout


@needs_promtool
@pytest.mark.parametrize("test_file", TESTS, ids=[p.name for p in TESTS])
def test_promtool_unit_tests(test_file: Path):
    out = _promtool("test", "rules", test_file)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


@needs_promtool
def test_runbook_queries_parse(tmp_path: Path):
    """Every ```promql block in the runbook is valid PromQL (promtool parses it as a rule)."""
    queries = _runbook_queries()
    assert len(queries) >= 20
    doc = {"groups": [{"name": "runbook", "rules": [
        {"record": f"runbook:query_{i}:check", "expr": q} for i, q in enumerate(queries)]}]}
    f = tmp_path / "runbook.rules.yaml"
    f.write_text(yaml.safe_dump(doc))
    out = _promtool("check", "rules", f)
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_a_wrong_expectation_fails(tmp_path: Path):
    """The unit tests can fail: a wrong expected value is reported (no vacuous SUCCESS)."""
    src = (ROOT / "rules" / "tests" / "edge_cases.yaml").read_text()
    assert "value: 140\n" in src
    bad = tmp_path / "edge_cases.yaml"
    bad.write_text(src.replace("value: 140\n", "value: 141\n").replace(
        "../wattprint.rules.yaml", str(RULES)))
    out = _promtool("test", "rules", bad)
    assert out.returncode != 0
    assert "1.41E+02" in out.stdout + out.stderr


# --- coverage of the unit tests ---------------------------------------------------------------

def test_every_recording_rule_has_an_expected_value():
    tested = set()
    for doc in _unit_tests():
        for group in doc["tests"]:
            for case in group.get("promql_expr_test") or []:
                if case.get("exp_samples"):
                    tested |= rules.metric_names(case["expr"]) & RECORD_NAMES
    assert RECORD_NAMES - tested == set()


def test_every_alert_is_tested_firing_and_not_firing():
    firing: dict[str, set[str]] = {}
    silent: set[str] = set()
    for doc in _unit_tests():
        for group in doc["tests"]:
            for case in group.get("alert_rule_test") or []:
                name = case["alertname"]
                if case.get("exp_alerts"):
                    for a in case["exp_alerts"]:
                        firing.setdefault(name, set()).add(a["exp_labels"].get("reason", ""))
                else:
                    silent.add(name)
    for name in ALERT_NAMES:
        assert name in firing, f"{name}: no test where it fires"
        assert name in silent, f"{name}: no test where it does not fire"
        # an alert with several rules: each rule (told apart by `reason`) fires in some test
        reasons = {a["labels"].get("reason", "") for a in ALERTS if a["alert"] == name}
        assert reasons <= firing[name], f"{name}: untested reasons {reasons - firing[name]}"


def test_unit_tests_use_the_rules_file():
    for p, doc in zip(TESTS, _unit_tests()):
        assert [(p.parent / f).resolve() for f in doc["rule_files"]] == [RULES.resolve()], p


# --- alerts: annotations, labels, runbook -----------------------------------------------------

@pytest.mark.parametrize("alert", ALERTS, ids=[f"{a['alert']}-{a['labels'].get('reason', '')}" for a in ALERTS])
def test_alert_has_annotations_and_severity(alert: dict):
    ann = alert.get("annotations") or {}
    for key in ("summary", "description", "runbook_url"):
        assert str(ann.get(key, "")).strip(), f"{alert['alert']}: no {key}"
    assert alert["labels"]["severity"] in SEVERITIES
    if not alert["expr"].lstrip().startswith("absent("):  # absent() has no labels or figure to show
        assert "{{ $labels." in ann["description"] or "{{ $value" in ann["description"]
    assert re.fullmatch(r"Wattprint[A-Z][A-Za-z]+", alert["alert"])
    assert alert.get("for"), f"{alert['alert']}: no `for:` (fires on one evaluation)"


def test_alerts_with_several_rules_tell_them_apart():
    for name in ALERT_NAMES:
        rs = [a for a in ALERTS if a["alert"] == name]
        if len(rs) > 1:
            reasons = [a["labels"].get("reason") for a in rs]
            assert None not in reasons and len(set(reasons)) == len(rs), name
        # one runbook section and one severity per alert name
        assert len({a["annotations"]["runbook_url"] for a in rs}) == 1, name
        assert len({a["labels"]["severity"] for a in rs}) == 1, name


def test_runbook_anchor_exists_for_every_alert():
    text = RUNBOOK.read_text()
    anchors = {_github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}
    for a in ALERTS:
        url = a["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page == rules.RUNBOOK, url
        assert anchor in anchors, f"{a['alert']}: no heading for #{anchor} in docs/runbook.md"
        assert anchor == a["alert"].lower()
    for name in ALERT_NAMES:  # each section says what/investigate/fix/caveats
        section = text.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
        for sub in ("### What it means", "### Investigate", "### Fix", "### Caveats"):
            assert sub in section, f"{name}: no '{sub}'"


def test_runbook_url_can_point_elsewhere():
    doc = rules.load(runbook_url="https://example.org/wattprint/docs/runbook.md")
    urls = {a["annotations"]["runbook_url"] for a in rules.alerting_rules(doc)}
    assert "https://example.org/wattprint/docs/runbook.md#wattprintexporterdown" in urls
    assert all(u.startswith("https://example.org/wattprint/docs/runbook.md#") for u in urls)


# --- names: the catalogue is the contract -----------------------------------------------------

@pytest.mark.parametrize("name,expr", _exprs(), ids=[n for n, _ in _exprs()])
def test_metric_names_exist(name: str, expr: str):
    for metric in rules.metric_names(expr):
        if metric.startswith("wattprint:"):
            assert metric in RECORD_NAMES, f"{name}: unknown recording rule {metric}"
        else:
            assert metric in catalogue.BY_NAME or metric == "up", f"{name}: {metric} not in the catalogue"


@pytest.mark.parametrize("name,expr", _exprs(), ids=[n for n, _ in _exprs()])
def test_label_names_exist(name: str, expr: str):
    for metric, keys in rules.selector_labels(expr):
        if metric in catalogue.BY_NAME:
            allowed = set(catalogue.BY_NAME[metric].labels) | TARGET_LABELS
        else:
            allowed = CATALOGUE_LABELS | TARGET_LABELS
        assert keys <= allowed, f"{name}: {metric}{{{keys - allowed}}} is not a catalogue label"
    unknown = rules.grouping_labels(expr) - CATALOGUE_LABELS - TARGET_LABELS - set(rules.DERIVED_LABELS)
    assert not unknown, f"{name}: grouping by unknown labels {unknown}"


def test_runbook_queries_use_known_names():
    for q in _runbook_queries():
        for metric in rules.metric_names(q):
            assert (metric in RECORD_NAMES or metric in catalogue.BY_NAME or metric == "up"), \
                f"runbook query uses unknown metric {metric}: {q}"


def test_recording_rule_names_and_guards():
    for r in RECORDS:
        if r["record"] == "wattprint:node_placement:info":  # no window: each node's GPU model and region now
            assert not re.search(r"\[\w+\]", r["expr"]) and not rules.metric_names(r["expr"]) & RECORD_NAMES
            continue
        assert re.fullmatch(r"wattprint:(endpoint|model)_[a-z0-9_]+:(5m|1h|increase1h)", r["record"]), r["record"]
        window = r["record"].rsplit(":", 1)[1].removeprefix("increase")
        # a rule's window matches the ranges it reads and the rules it builds on
        for rng in re.findall(r"\[(\w+)\]", r["expr"]):
            assert rng == window, r["record"]
        for dep in rules.metric_names(r["expr"]) & RECORD_NAMES - {"wattprint:node_placement:info"}:
            assert dep.endswith(":" + window) and not r["record"].endswith("increase1h"), (r["record"], dep)
        # ratios never divide by zero: the denominator is filtered with `> 0`
        if re.search(r"\s/\s", r["expr"]):
            assert re.search(r"/\s*(?:(?:ignoring|on)\s*\([^)]*\)\s*)?(?:group_(?:left|right)\s*\([^)]*\)\s*)?\((.|\n)*> 0\)", r["expr"]), f"{r['record']}: unguarded division"
    assert {r["record"].rsplit(":", 1)[0] for r in RECORDS if r["record"].endswith(":5m")} == \
        {r["record"].rsplit(":", 1)[0] for r in RECORDS if r["record"].endswith(":1h")}


def test_rules_file_has_no_helm_templating():
    text = RULES.read_text()
    for marker in (".Values", ".Release", ".Chart", ".Capabilities", "{{-", "-}}", "include \"", "tpl "):
        assert marker not in text, f"Helm templating ({marker}) in {RULES.name}"
    # the only templates are Prometheus alert templates, inside annotations
    for a in ALERTS:
        assert "{{" not in a["expr"]
    for r in RECORDS:
        assert "{{" not in r["expr"]


def test_rules_path_and_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert rules.path() == RULES.resolve()
    copy = tmp_path / "r.yaml"
    copy.write_text(RULES.read_text())
    monkeypatch.setenv("WATTPRINT_RULES_FILE", str(copy))
    assert rules.path() == copy
    assert rules.load() == DOC
    monkeypatch.setenv("WATTPRINT_RULES_FILE", str(tmp_path / "missing.yaml"))
    with pytest.raises(FileNotFoundError, match="WATTPRINT_RULES_FILE"):
        rules.path()


def test_metric_name_reader():
    e = ('sum by (a) (rate(x_total{a="b", c=~"d.+"}[5m] offset 1w)) > 1e3 '
         'and on (a) y:z:1h unless absent(up{job=~".*w.*"}) or 0.9 * w')
    assert rules.metric_names(e) == {"x_total", "y:z:1h", "up", "w"}
    assert rules.selector_labels(e) == [("x_total", {"a", "c"}), ("up", {"job"})]
    assert rules.grouping_labels(e) == {"a"}


# --- the generator: one template, the deployment's labels as parameters -----------------------

def test_the_rules_file_is_the_template_generated_with_the_defaults():
    assert RULES.read_text() == rules.generate(), \
        "rules/wattprint.rules.yaml is stale: python -m exporter rules -o rules/wattprint.rules.yaml"


def test_every_endpoint_aggregation_keeps_the_cluster_label():
    for name, expr in _exprs():
        for m in re.finditer(r"\b(by|on)\s*\(([^)]*)\)", expr):
            labels = {x.strip() for x in m.group(2).split(",")}
            if "endpoint" in labels:
                assert "cluster" in labels, f"{name}: {m.group(0)} drops the cluster label"
    for a in ALERTS:  # an alert's own queries select the same cluster's series
        for q in re.findall(r'printf "([^"]*\{[^}]*\})', a["annotations"].get("description", "")):
            if "endpoint=" in q:
                assert "cluster=%q" in q, (a["alert"], q)


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not found (Debian package prometheus)")
@pytest.mark.parametrize("cluster, job", [("k8s_cluster", 'job="wattprint", namespace="monitoring"'),
                                          ("", 'job=~"wattprint|node-energy"')])
def test_other_labels_generate_rules_promtool_accepts(tmp_path, cluster, job):
    text = rules.generate(cluster, job, "https://docs.example.org/runbook.html")
    f = tmp_path / "r.yaml"
    f.write_text(text)
    out = _promtool("check", "rules", f)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"up{{{job}}}" in text and "https://docs.example.org/runbook.html#wattprintexporterdown" in text
    if cluster:
        assert f"by ({cluster}, namespace, endpoint, model)" in text and "by (cluster," not in text
    else:
        exprs = [r["expr"] for g in yaml.safe_load(text)["groups"] for r in g["rules"]]
        assert "by (namespace, endpoint, model)" in text and not any("cluster" in e for e in exprs)


@pytest.mark.parametrize("args, words", [
    (("k8s-cluster",), "Prometheus label name"), (("namespace",), "Prometheus label name"),
    (("cluster", "job=wattprint"), "label matchers"), (("cluster", 'job="x"', "docs/runbook.md"), "absolute"),
    (("cluster", 'job="x"', "https://x.org/runbook.md#top"), "fragment")])
def test_bad_generator_parameters_are_named(args, words):
    with pytest.raises(ValueError, match=words):
        rules.generate(*args)


def test_the_rules_command_writes_the_file(tmp_path):
    out = tmp_path / "rules.yaml"
    p = subprocess.run([sys.executable, "-m", "exporter", "rules", "--rules.cluster-label=region_cluster",
                        "-o", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "by (region_cluster, namespace, endpoint, model)" in out.read_text()
    bad = subprocess.run([sys.executable, "-m", "exporter", "rules", "--rules.job-selector=job"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert bad.returncode == 2 and "label matchers" in bad.stderr


def test_thresholds_are_parameters():
    """Every __T:name__ token of the template is a THRESHOLDS name and every name is used; the
    defaults give the file as it was written by hand; a tuned one lands in the expression and in
    the description that states it; the command takes --rules.threshold."""
    template = rules.TEMPLATE.read_text().partition("\ngroups:\n")[2]  # the rules, not the header notes
    assert set(re.findall(r"__T:([a-z_]+)__", template)) == set(rules.THRESHOLDS)
    assert "__T:" not in rules.generate() and "__T:" in rules.generate(thresholds=None)
    text = rules.generate(thresholds={"idle_cost_ratio": 4, "gpu_idle_active_watts": 75.5})
    alerts = {r["alert"]: r for r in rules.alerting_rules(yaml.safe_load(text))}
    assert "> on (cluster, namespace, endpoint, model) 4 * " in alerts["WattprintReservationMostlyIdle"]["expr"]
    assert "over 4 times" in alerts["WattprintReservationMostlyIdle"]["annotations"]["description"]
    assert ">= 75.5" in alerts["WattprintGpuIdleWithEndpointResident"]["expr"]
    assert "under 75.5 W" in alerts["WattprintGpuIdleWithEndpointResident"]["annotations"]["description"]
    assert "--rules.threshold=idle_cost_ratio=4 --rules.threshold=gpu_idle_active_watts=75.5" in text
    for bad, words in [({"idle_ratio": 4}, "not one of"), ({"idle_cost_ratio": -1}, "number >= 0"),
                       ({"idle_cost_ratio": True}, "number >= 0")]:
        with pytest.raises(ValueError, match=words):
            rules.generate(thresholds=bad)
    p = subprocess.run([sys.executable, "-m", "exporter", "rules", "--rules.threshold=gpu_idle_share=0.75"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 0 and "> 0.75)" in p.stdout, p.stderr
    bad = subprocess.run([sys.executable, "-m", "exporter", "rules", "--rules.threshold=gpu_idle_share"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert bad.returncode == 2 and "NAME=NUMBER" in bad.stderr


def test_model_rules_keep_only_the_placement_labels():
    """wattprint:model_* series are one per (cluster, model, gpu_model, region): each groups by
    exactly those and joins each node's placement on (cluster, instance), so no endpoint,
    instance or GPU label can multiply them."""
    place = {rules.DEFAULT_CLUSTER_LABEL, "model", *rules.DERIVED_LABELS}
    model_rules = [r for r in RECORDS if r["record"].startswith("wattprint:model_")]
    assert len(model_rules) == 16
    for r in model_rules:
        for kind, labels in re.findall(r"\b(by|on|group_left)\s*\(([^)]*)\)", r["expr"]):
            got = {x.strip() for x in labels.split(",")}
            want = {"by": place, "on": {rules.DEFAULT_CLUSTER_LABEL, "instance"}, "group_left": set(rules.DERIVED_LABELS)}
            assert got == want[kind], (r["record"], kind, got)
    info = next(r for r in RECORDS if r["record"] == "wattprint:node_placement:info")
    assert set(re.findall(r"\bby\s*\(([^)]*)\)", info["expr"])) <= {
        "cluster, instance", "cluster, instance, gpu_model", "cluster, instance, name", "cluster, instance, region"}
