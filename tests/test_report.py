"""`wattprint report`'s pure parts: the period, the PromQL, the choice of source, the rows and
ratios, the renderers, and the HTTP client's errors (against a stand-in opener). Against a real
Prometheus: tests/integration/test_report_prometheus.py."""

from __future__ import annotations

import csv
import io
import json
import socket
import urllib.error
import urllib.parse
from datetime import datetime, timezone

import pytest

from exporter import cli, report
from exporter.report import html, model, period, prom, queries, render

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc).timestamp()
NOV = datetime(2026, 11, 1, tzinfo=timezone.utc).timestamp()


# --- the period ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, want", [
    ("now", NOW), ("-30d", NOW - 30 * 86400), ("-12h", NOW - 43200), ("-90m", NOW - 5400), ("-2w", NOW - 14 * 86400),
    ("-1.5h", NOW - 5400), ("2026-11-01", NOV), ("2026-11-01T00:00:00Z", NOV), ("2026-11-01T01:00:00+01:00", NOV),
    ("2026-11-01T12:00:00", NOV + 43200),
])
def test_times(text, want):
    assert period.parse_time(text, NOW) == want


@pytest.mark.parametrize("text", ["yesterday", "30d", "-30y", "2026-13-01", ""])
def test_bad_times_name_the_flag_and_the_forms(text):
    with pytest.raises(period.PeriodError, match=r"--to=.*not a time \(use 2026-11-01, .* -30d, -12h or now\)"):
        period.parse_time(text, NOW, "--to")


def test_period_range_and_days():
    p = period.parse_period("2026-11-01", "2026-11-03T06:00:00Z", NOW)
    assert p.range == f"{(2 * 86400 + 21600) * 1000}ms"
    assert p.describe() == "2026-11-01T00:00:00Z → 2026-11-03T06:00:00Z (2.25 days)"
    assert [(period.iso(a), b - a) for a, b in p.days()] == [
        ("2026-11-01T00:00:00Z", 86400), ("2026-11-02T00:00:00Z", 86400), ("2026-11-03T00:00:00Z", 21600)]
    with pytest.raises(period.PeriodError, match="empty period: --from='now'"):
        period.parse_period("now", "-1d", NOW)


# --- the PromQL ------------------------------------------------------------------------------

def test_expressions():
    energy, co2e, requests, _ = queries.COUNTERS
    by = ("cluster", "endpoint")
    # 1 ms short: the rollup point stamped exactly at the start covers the hour before (2.x ranges hold both ends)
    assert queries.increase_expr(energy, "rollups", by, "86400000ms", False) == \
        "sum by (cluster, endpoint, mode) (sum_over_time(wattprint:endpoint_energy_joules:increase1h[86399999ms]))"
    assert queries.increase_expr(requests, "raw", by, "1h", True) == \
        'sum by (cluster, endpoint) (increase(wattprint_endpoint_requests_total{endpoint!~"unallocated|system|overflow"}[1h]))'
    q = queries.factor_queries(period.Period(NOV, NOV + 30 * 86400))
    assert q["pue_max"] == "max by (cluster, source) (max_over_time(wattprint_pue_ratio[2592000000ms:3600s]))"
    assert queries.gauge_step(period.Period(NOV, NOV + 3600)) == "150s"


class FakeClient:
    """Answers each query with the samples of the first ``answers`` key found in it."""
    url = "http://prom:9090"

    def __init__(self, answers: dict[str, list[tuple[dict, float]]], names=()):
        self.answers, self.names, self.asked = answers, list(names), []

    def query(self, expr, at):
        self.asked.append(expr)
        for needle, samples in self.answers.items():
            if needle in expr:
                return [prom.Sample(labels, v) for labels, v in samples]
        return []

    def metric_names(self):
        return self.names


MONTH = period.Period(NOV, NOV + 30 * 86400)  # 720 hours


@pytest.mark.parametrize("held, live, want", [
    ({}, {"a"}, "raw"),
    ({"a": 720, "b": 700}, {"a", "b"}, "rollups"),
    ({"a": 720, "b": 600}, {"a", "b"}, "raw"),  # b's rollups began late in the month
    ({"a": 720}, {"a", "b"}, "raw"),  # b reports raw counters but has no rollups
    ({"a": 720}, set(), "rollups"),  # raw counters gone (shorter retention)
])
def test_auto_source(held, live, want):
    c = FakeClient({"count_over_time(wattprint:endpoint_energy": [({"cluster": k}, v) for k, v in held.items()],
                    "group by (cluster) (wattprint_endpoint_energy": [({"cluster": k}, 1) for k in live]})
    assert queries.choose_source(c, MONTH, "auto", model.DEFAULT_BY)[0] == want


def test_source_rules():
    c = FakeClient({})
    assert queries.choose_source(c, MONTH, "auto", ("instance",))[0] == "raw"
    assert queries.choose_source(c, period.Period(NOV, NOV + 3600), "auto", ("endpoint",))[0] == "raw"
    assert queries.choose_source(c, MONTH, "rollups", ("endpoint",))[0] == "rollups"
    with pytest.raises(period.OptionError, match="instance needs the raw counters"):
        queries.choose_source(c, MONTH, "rollups", ("instance",))
    assert c.asked == []


def test_nothing_to_report_says_which():
    empty = FakeClient({}, names=["up", "prometheus_build_info"])
    with pytest.raises(queries.ReportError, match=r"http://prom:9090 has no wattprint metrics"):
        queries.gather(empty, MONTH, ("endpoint",))
    old = FakeClient({}, names=["wattprint_endpoint_energy_joules_total"])
    with pytest.raises(queries.ReportError, match=r"holds no wattprint data between 2026-11-01T00:00:00Z and "
                                                  r"2026-12-01T00:00:00Z: the range is empty"):
        queries.gather(old, MONTH, ("endpoint",))


def test_gather_falls_back_to_partial_rollups_when_raw_is_gone():
    c = FakeClient({"count_over_time(wattprint:endpoint_energy": [({}, 100)],
                    "sum_over_time(wattprint:endpoint_requests": [({"endpoint": "chat"}, 10)]})
    st = queries.gather(c, MONTH, ("endpoint",))
    assert st.source == "rollups" and "partial" in st.source_detail and st.notes
    assert st.rows[0].figures.requests == 10


# --- rows and ratios -------------------------------------------------------------------------

def rows_fixture() -> list[model.Row]:
    by = ("cluster", "endpoint", "model")
    results = {
        ("energy", "mode"): [({"cluster": "a", "endpoint": "chat", "model": "m", "mode": "active"}, 3.0e6),
                             ({"cluster": "a", "endpoint": "chat", "model": "m", "mode": "idle"}, 0.6e6),
                             ({"cluster": "a", "endpoint": "unallocated", "model": "", "mode": "idle"}, 1.8e6),
                             ({"cluster": "b", "endpoint": "chat", "model": "m", "mode": "active"}, 7.2e6)],
        ("co2e", "scope"): [({"cluster": "a", "endpoint": "chat", "model": "m", "scope": "operational"}, 300.0),
                            ({"cluster": "a", "endpoint": "chat", "model": "m", "scope": "embodied"}, 20.0),
                            ({"cluster": "a", "endpoint": "unallocated", "model": "", "scope": "embodied"}, 500.0),
                            ({"cluster": "b", "endpoint": "chat", "model": "m", "scope": "operational"}, 100.0)],
        ("requests", ""): [({"cluster": "a", "endpoint": "chat", "model": "m"}, 1000.0)],
        ("tokens", "kind"): [({"cluster": "a", "endpoint": "chat", "model": "m", "kind": "generation"}, 64000.0),
                             ({"cluster": "a", "endpoint": "chat", "model": "m", "kind": "prompt"}, 1e6)],
    }
    return model.fold(by, results, {"m": 32000.0})


def test_fold_ratios_and_order():
    rows = rows_fixture()
    assert [(r.group["cluster"], r.group["endpoint"]) for r in rows] == [("a", "chat"), ("b", "chat"), ("a", "unallocated")]
    chat = rows[0]
    f = chat.figures
    assert (f.energy_joules, f.co2e_grams, f.generation_tokens, f.prompt_tokens) == (3.6e6, 320.0, 64000.0, 1e6)
    assert f.idle_share == pytest.approx(1 / 6)
    assert f.grams_per_request == pytest.approx(0.32)
    assert f.grams_per_1k_generation_tokens == pytest.approx(5.0)
    assert f.joules_per_request == pytest.approx(3600)
    assert f.operational_grams_per_kwh == pytest.approx(300)
    assert chat.training_share == pytest.approx(0.01)
    assert rows[1].figures.grams_per_request is None and rows[1].figures.idle_share == 0
    assert rows[2].catch_all and not chat.catch_all and rows[2].training_share is None
    d = chat.as_dict()
    assert d["namespace"] is None and d["endpoint"] == "chat" and "instance" not in d


def statement(rows=None, by=("cluster", "endpoint", "model")) -> model.Statement:
    fx = model.Factors(carbon=[{"cluster": "a", "region": "FR", "provider": "static", "zone": "FR", "source": "ember",
                                "how": "configured"}],
                       pue=[({"cluster": "a", "source": "default"}, 1.0, 1.0), ({"cluster": "b", "source": "aws"}, 1.1, 1.2)],
                       embodied=[({"cluster": "a"}, 0.003666, 0.003666), ({"cluster": "b"}, 0.003666, 0.003666)])
    return model.Statement("http://prom:9090", MONTH, by, "rollups",
                           rows_fixture() if rows is None else rows, fx, source_detail="rollups (test)")


# --- the formats -----------------------------------------------------------------------------

def test_markdown():
    text = render.markdown(statement())
    assert "- **Period:** 2026-11-01T00:00:00Z → 2026-12-01T00:00:00Z (30 days)" in text
    assert "| a | chat | m | 1.00 | 16.7 % | 0.320 | 0.300 | 0.0200 | 1,000 | 64,000 | 0.320 | 5.00 | 1.00 % |" in text
    assert "| a | unallocated † | (none) |" in text
    assert "| **total** |  |  | **3.50** |" in text
    assert "- **PUE:** 1 (cluster=a, source=default); 1.1–1.2 (cluster=b, source=aws)" in text
    assert "3.67 mg/GPU-s (cluster=a; cluster=b)" in text
    assert "cluster=a: region=FR, provider=static, zone=FR, source=ember, how=configured" in text


def test_markdown_cells_cannot_break_the_table():
    st = statement(model.fold(("endpoint",), {("requests", ""): [({"endpoint": "a|b\nc"}, 1.0)]}, {}),
                   by=("endpoint",))
    line = next(x for x in render.markdown(st).splitlines() if x.startswith("| a"))
    assert line.startswith(r"| a\|b c |") and line.count("|") - line.count(r"\|") == 12


def test_json_and_csv():
    st = statement()
    doc = json.loads(render.render_json(st))
    assert {"from", "to", "rows", "totals", "source", "factors", "method"} <= set(doc)
    assert doc["from"] == "2026-11-01T00:00:00Z" and doc["source"] == "rollups"
    first = doc["rows"][0]
    for key in ("namespace", "endpoint", "model", "energy_joules", "co2e_grams", "co2e_operational_grams",
                "co2e_embodied_grams", "requests", "grams_per_request"):
        assert key in first
    assert doc["totals"]["co2e_grams"] == 920.0
    assert doc["factors"]["pue"][1] == {"cluster": "b", "source": "aws", "min": 1.1, "max": 1.2}
    lines = list(csv.DictReader(io.StringIO(render.render_csv(st))))
    assert [x["row"] for x in lines] == ["group", "group", "group", "total"]
    assert lines[0]["catch_all"] == "false" and lines[2]["catch_all"] == "true"
    assert lines[1]["grams_per_request"] == "" and float(lines[3]["co2e_grams"]) == 920.0


def test_html_is_self_contained_and_escaped():
    rows = rows_fixture()
    rows[0].group["endpoint"] = "<script>alert(1)</script>"
    for r in rows:
        r.daily = [(NOV + i * 86400, 10.0 * i, 1.0) for i in range(30)]
    page = html.render_html(statement(rows))
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert page.count('<svg class="chart"') == 3 and page.count("<rect class=\"op\"") == 90 + 1
    assert "<title>2026-11-30: 291 g CO2e (operational 290, embodied 1.00)</title>" in page


# --- the HTTP client -------------------------------------------------------------------------

class Answer(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def opener_of(result):
    def opener(req, timeout):
        opener.url = req.full_url
        if isinstance(result, BaseException):
            raise result
        return Answer(result)
    return opener


@pytest.mark.parametrize("result, message", [
    (urllib.error.URLError(ConnectionRefusedError(111, "refused")), "cannot reach Prometheus at http://p:9090: connection refused"),
    (urllib.error.URLError(socket.timeout("timed out")), "cannot reach Prometheus at http://p:9090: timed out within 3 s"),
    (urllib.error.URLError(socket.gaierror(-2, "Name or service not known")), "unknown host (Name or service not known)"),
    (urllib.error.HTTPError("u", 400, "Bad Request", {}, io.BytesIO(
        b'{"status":"error","errorType":"bad_data","error":"parse error"}')), "answered HTTP 400 to up: bad_data: parse error"),
    (urllib.error.HTTPError("u", 502, "Bad Gateway", {}, io.BytesIO(b"<html>gateway</html>")), "HTTP 502 to up: <html>gateway"),
    (b"<!DOCTYPE html><html>Grafana</html>", "did not answer with JSON (is http://p:9090 a Prometheus server?)"),
    (b'{"status":"error","errorType":"execution","error":"query processing would load too many samples"}',
     "refused up: execution: query processing would load too many samples"),
])
def test_client_errors_name_the_url_and_the_cause(result, message):
    c = prom.Client("http://p:9090/", timeout=3, opener=opener_of(result))
    with pytest.raises(prom.PrometheusError) as e:
        c.query("up", NOW)
    assert message in str(e.value)


def test_another_cluster_label_stands_in_for_cluster_both_ways():
    body = (b'{"status":"success","data":{"resultType":"vector","result":[{"metric":'
            b'{"k8s_cluster":"eu","endpoint":"chat"},"value":[1,"2.5"]}]}}')
    op = opener_of(body)
    c = prom.Client("http://p:9090", opener=op, cluster_label="k8s_cluster")
    (s,) = c.query('sum by (cluster, endpoint) (x{cluster="eu"})', NOW)
    sent = urllib.parse.unquote_plus(op.url)
    assert 'sum by (k8s_cluster, endpoint) (x{k8s_cluster="eu"})' in sent and "(cluster" not in sent
    assert s.labels == {"cluster": "eu", "endpoint": "chat"}
    with pytest.raises(prom.PrometheusError, match="label name"):
        prom.Client("http://p:9090", cluster_label="k8s-cluster")


def test_client_query_and_range():
    body = b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1,"2.5"]}]}}'
    op = opener_of(body)
    c = prom.Client("https://p.example/prometheus", opener=op)
    assert c.query("sum(x)", 100.0) == [prom.Sample({"a": "1"}, 2.5)]
    assert op.url == "https://p.example/prometheus/api/v1/query?query=sum%28x%29&time=100.000"
    body = b'{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"2"],[2,"3"]]}]}}'
    assert prom.Client("http://p", opener=opener_of(body)).query_range("x", 1, 2, 1) == [prom.Series({}, [(1, 2), (2, 3)])]
    with pytest.raises(prom.PrometheusError, match="not an http"):
        prom.Client("prometheus:9090")


# --- the command line ------------------------------------------------------------------------

def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        cli.main(["report", "--help"])
    text = capsys.readouterr().out
    for opt in ("--prometheus.url", "--from", "--to", "--by", "--output", "--source", "--exclude-catch-all",
                "--timeout", "examples:", "--from=2026-11-01", "-30d"):
        assert opt in text


def test_parse_by():
    assert report.parse_by("cluster, endpoint") == ("cluster", "endpoint")
    for bad in ("pod", "", "endpoint,endpoint"):
        with pytest.raises(period.OptionError, match="choose from cluster, namespace, endpoint, model, instance"):
            report.parse_by(bad)


def test_building_the_command_line_loads_no_http_client():
    """`wattprint serve` builds the same parser: the report's urllib client (and with it ssl,
    ~4 MB of RSS) loads only when a report runs."""
    import subprocess
    import sys

    code = ("import sys; from exporter import cli; cli.build_parser(); "
            "print(sorted(m for m in ('ssl', 'urllib.request', 'exporter.report.prom') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
