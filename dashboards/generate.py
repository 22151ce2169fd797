#!/usr/bin/env python3
"""Wattprint's Grafana dashboards, as code (grafana-foundation-sdk, Grafana 11.6 schema).

    python dashboards/generate.py           # write dashboards/*.json
    python dashboards/generate.py --check   # exit 1 if a committed JSON file is not current

Metric names come from the catalogue (``exporter/catalogue.py``) and recording-rule names are
checked against ``rules/wattprint.rules.yaml``, so a renamed metric or rule fails here, not in
Grafana. Every panel has a unit and queries the datasource chosen by the ``datasource`` variable
(default: uid ``prometheus``, the datasource the docker compose quick start provisions).

Needs ``grafana-foundation-sdk==1769699379!11.6.0`` (the 11.6 flavour: schemaVersion 41; a plain
``pip install grafana-foundation-sdk`` resolves to the 10.1 flavour).
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from grafana_foundation_sdk.builders import (bargauge, common, dashboard, prometheus, stat, table,
                                             timeseries)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from exporter import catalogue  # noqa: E402

RULES_FILE = ROOT / "rules" / "wattprint.rules.yaml"
DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
PROVISIONED_DS_UID = "prometheus"  # deploy/compose/grafana/provisioning/datasources/prometheus.yaml
TAGS = ["wattprint", "energy", "carbon"]


# --- names: from the catalogue and the rules file, never retyped ------------------------------

def metric(short: str) -> str:
    """A catalogue metric's full name (KeyError for a name the exporter does not expose)."""
    return catalogue.get(short).name


def _recorded() -> set[str]:
    doc = yaml.safe_load(RULES_FILE.read_text())
    return {r["record"] for g in doc["groups"] for r in g["rules"] if "record" in r}


RECORDED = _recorded()


def rule(name: str) -> str:
    """A recording rule's full name, ``wattprint:<name>``, checked against the rules file."""
    full = "wattprint:" + name
    if full not in RECORDED:
        raise KeyError(f"{full} is not a recording rule in {RULES_FILE.relative_to(ROOT)}")
    return full


ENERGY = metric("endpoint_energy_joules_total")
CO2E = metric("endpoint_co2e_grams_total")
COUNTERFACTUAL = metric("counterfactual_co2e_grams_total")
TRAINING = metric("model_training_co2e_grams")
BUDGET = metric("endpoint_budget_grams_per_request")
INTENSITY = metric("grid_intensity_grams_per_kwh")
NODE_ENERGY = metric("node_energy_joules_total")
GPU_ENERGY = metric("gpu_energy_joules_total")
GPU_IDLE = metric("gpu_idle_power_watts")
GPU_MEM_USED = metric("gpu_memory_used_bytes")
GPU_MEM_TOTAL = metric("gpu_memory_total_bytes")
GPU_PROCS = metric("gpu_processes")
GPU_INFO = metric("gpu_info")
CPU_ENERGY = metric("cpu_energy_joules_total")
CPU_BUSY = metric("cpu_busy_ratio")
FOLDED = metric("attribution_folded_series_total")
COLLECTOR_UP = metric("collector_up")
COLLECTOR_ERRORS = metric("collector_errors_total")
ENGINE_UP = metric("engine_scrape_up")
ENGINE_ERRORS = metric("engine_scrape_errors_total")
SAMPLE_DURATION = metric("sample_duration_seconds")
SAMPLE_INTERVAL = metric("sample_interval_seconds")
LAST_SAMPLE = metric("last_sample_timestamp_seconds")
BUILD_INFO = metric("build_info")

POWER_5M = rule("endpoint_power_watts:5m")
COMPONENT_POWER_5M = rule("endpoint_component_power_watts:5m")
IDLE_SHARE_5M = rule("endpoint_idle_share:5m")
GPU_IDLE_SHARE_5M = rule("endpoint_gpu_idle_share:5m")
CO2E_RATE_5M = rule("endpoint_co2e_grams_per_second:5m")
CO2E_RATE_1H = rule("endpoint_co2e_grams_per_second:1h")
REQUESTS_5M = rule("endpoint_requests_per_second:5m")
REQUESTS_1H = rule("endpoint_requests_per_second:1h")
TOKENS_5M = rule("endpoint_generation_tokens_per_second:5m")
J_PER_REQUEST_5M = rule("endpoint_joules_per_request:5m")
J_PER_1K_TOKENS_5M = rule("endpoint_joules_per_1k_generation_tokens:5m")
G_PER_REQUEST_5M = rule("endpoint_co2e_grams_per_request:5m")
G_PER_REQUEST_1H = rule("endpoint_co2e_grams_per_request:1h")
G_PER_1K_TOKENS_5M = rule("endpoint_co2e_grams_per_1k_generation_tokens:5m")
MARGINAL_J_5M = rule("endpoint_marginal_joules_per_token:5m")
MARGINAL_SE_5M = rule("endpoint_marginal_joules_per_token_stderr:5m")
MARGINAL_G_PER_REQUEST_5M = rule("endpoint_marginal_co2e_grams_per_request:5m")
IDLE_G_PER_REQUEST_5M = rule("endpoint_idle_co2e_grams_per_request:5m")
MARGINAL_G_PER_REQUEST_1H = rule("endpoint_marginal_co2e_grams_per_request:1h")
IDLE_G_PER_REQUEST_1H = rule("endpoint_idle_co2e_grams_per_request:1h")
J_PER_REQUEST_1H = rule("endpoint_joules_per_request:1h")
# the same model across GPU types and regions (group wattprint.model: one series per cluster,
# model, gpu_model, region; each node's GPU model and region joined in once, by the rules)
PLACEMENT = rule("node_placement:info")
MODEL_POWER_1H = rule("model_power_watts:1h")
MODEL_REQUESTS_1H = rule("model_requests_per_second:1h")
MODEL_J_PER_REQUEST_1H = rule("model_joules_per_request:1h")
MODEL_G_PER_REQUEST_1H = rule("model_co2e_grams_per_request:1h")
MODEL_G_PER_REQUEST_5M = rule("model_co2e_grams_per_request:5m")
MODEL_J_PER_1K_TOKENS_1H = rule("model_joules_per_1k_generation_tokens:1h")
# hourly rollups (group wattprint.rollup.1h): a month or a year is a sum_over_time over them
CO2E_1H_ROLLUP = rule("endpoint_co2e_grams:increase1h")
ENERGY_1H_ROLLUP = rule("endpoint_energy_joules:increase1h")
REQUESTS_1H_ROLLUP = rule("endpoint_requests:increase1h")
MODEL_STATE = metric("endpoint_energy_model_state")
MODEL_WINDOWS = metric("endpoint_energy_model_windows")
MODEL_R2 = metric("endpoint_energy_model_r_squared")
MODEL_FIXED_W = metric("endpoint_energy_model_fixed_active_watts")

# Grafana units (ids from Grafana's value formats; `si:` scales with SI prefixes, `suffix:` does not)
W, J, G, S, BYTES, RATIO, NONE = "watt", "joule", "massg", "s", "bytes", "percentunit", "none"
# packages/grafana-data/src/valueFormats/categories.ts (grafana/grafana@002fa1b): massg is
# decimalSIPrefix('g') (420 t shows as "420 Mg"), masst is toFixedUnit('t') (never rescaled), kwatth
# is decimalSIPrefix('Wh', 1). Tonnes are grams / TONNE in the query, kWh joules / KWH_J.
T, KWH = "masst", "kwatth"
TONNE, KWH_J = 1e6, 3.6e6
G_PER_H = "si:g/h"
G_PER_KWH = "suffix:g/kWh"
REQ_PER_S = "reqps"
TOKENS_PER_S = "suffix:tokens/s"
# the catalogue's unit → Grafana's, for panels that show a metric as it is exported
UNIT = {"joules": J, "watts": W, "grams": G, "seconds": S, "bytes": BYTES, "ratio": RATIO,
        "grams_per_kwh": G_PER_KWH, "": NONE}


def unit_of(name: str) -> str:
    return UNIT[catalogue.BY_NAME[name].unit]


assert unit_of(INTENSITY) == G_PER_KWH and unit_of(GPU_MEM_USED) == BYTES and unit_of(CO2E) == G

# Label selectors of the template variables. allValue ".*" also matches an empty label (outside
# Kubernetes `namespace` is ""), which Grafana's default "all" regex would not.
CLUSTER = 'cluster=~"$cluster"'
SEL = CLUSTER + ', namespace=~"$namespace", endpoint=~"$endpoint", model=~"$model"'
MODEL_SEL = CLUSTER + ', model=~"$model"'  # the wattprint:model_* series have no namespace or endpoint
# a node: `node` where the scrape config adds it (the Helm chart relabels the pod's node name into
# it), else the `instance` (host:port outside Kubernetes, a pod IP inside)
INST = CLUSTER + ', node=~"$node", instance=~"$instance"'
BY_ENDPOINT = "cluster, namespace, endpoint, model"  # cluster: the external label of a global view (docs/fleet.md)
LEGEND_ENDPOINT = "{{endpoint}} · {{model}}"
NOT_ENDPOINTS = "unallocated|system|overflow"  # the catch-all series (README, attribution)
ENDPOINTS_ONLY = f'endpoint!~"{NOT_ENDPOINTS}"'
RANKED = 'endpoint!~"$catch_all"'  # the catch_all variable: excluded (NOT_ENDPOINTS) by default
CATCH_ALL = f'endpoint=~"{NOT_ENDPOINTS}"'
OPERATIONAL = 'scope="operational"'
IDLE = 'mode="idle"'
SERVED = 'model!=""'  # series of a served model (not unallocated/system)


def per(num: str, den: str) -> str:
    """Σ num / Σ den over the selected endpoints whose den is > 0: an endpoint without request or
    token counters (unallocated, system, an engine that cannot be read) adds to neither side."""
    return per_expr(f"{num}{s(SEL)}", f"{den}{s(SEL)}")


def per_expr(num: str, den: str) -> str:
    """per() over two expressions by endpoint."""
    return (f"sum(sum by ({BY_ENDPOINT}) ({num}) and on ({BY_ENDPOINT}) (sum by ({BY_ENDPOINT}) ({den}) > 0)) "
            f"/ sum(sum by ({BY_ENDPOINT}) ({den}) > 0)")


def over_range(rollup: str, *matchers: str, by: str = BY_ENDPOINT) -> str:
    """The sum of an hourly rollup over the panel's range (this month, this year), by ``by``."""
    return f"sum by ({by}) (sum_over_time({rollup}{s(SEL, *matchers)}[$__range]))"


# --- drill-down: fleet → endpoint → node (Grafana data links; the link's URL is percent-encoded
# by Grafana, ${__data.fields.x} is a table row's column x, ${__field.labels.x} a series' label) --

def link_to(title: str, uid: str, params: str) -> dashboard.DashboardLink:
    return dashboard.DashboardLink(title).type(dm.DashboardLinkType.LINK).url(
        f"/d/{uid}/{uid}?{params}&${{datasource:queryparam}}&${{cluster:queryparam}}&${{__url_time_range}}")


def to_endpoint(src: str = "__data.fields") -> list:
    return [link_to("Endpoint detail: ${%s.endpoint}" % src, "wattprint-endpoint-detail",
                    "var-endpoint=${%s.endpoint}&var-model=${%s.model}&${namespace:queryparam}" % (src, src))]


def to_node() -> list:
    return [link_to("Node detail: ${__data.fields.instance}", "wattprint-node-detail",
                    "var-instance=${__data.fields.instance}")]


def s(*matchers: str) -> str:
    """A selector from matchers: s(SEL, 'mode="idle"') → {namespace=~…, mode="idle"}."""
    return "{" + ", ".join(m for m in matchers if m) + "}"


# --- panels -----------------------------------------------------------------------------------

@dataclass
class Target:
    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False
    unit: str = ""  # a unit for this query's values when it differs from the panel's

    def build(self, ref: str) -> prometheus.Dataquery:
        q = prometheus.Dataquery().expr(self.expr).ref_id(ref).datasource(DS)
        q = q.instant() if self.instant else q.range()
        if self.legend:
            q = q.legend_format(self.legend)
        if self.table:
            q = q.format(PromQueryFormat.TABLE)
        return q


@dataclass
class Cell:
    """A panel and its size on the 24-column grid."""
    panel: object
    w: int
    h: int


def _base(builder, title: str, unit: str, desc: str, targets: list[Target], columns: dict[str, str] | None = None):
    """Title, description, datasource, unit and queries (refIds A, B, …). A query with a unit of
    its own gets an override: by refId, or in a table (whose frames are merged) by its column."""
    b = builder.title(title).description(desc).datasource(DS).unit(unit)
    for i, t in enumerate(targets):
        ref = chr(ord("A") + i)
        b = b.with_target(t.build(ref))
        if t.unit and t.unit != unit:
            prop = [dm.DynamicConfigValue(id_val="unit", value=t.unit)]
            if columns is None:
                b = b.override_by_query(ref, prop)
            else:
                b = b.override_by_name(columns["Value" if len(targets) == 1 else f"Value #{ref}"], prop)
    return b


def _thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return (dashboard.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE)
            .steps([dm.Threshold(value=v, color=c) for v, c in steps]))


NEUTRAL = _thresholds((None, "text"))
UP_DOWN = [dm.ValueMap(options={"0": dm.ValueMappingResult(text="down", color="red", index=0),
                                "1": dm.ValueMappingResult(text="up", color="green", index=1)})]


def graph(title: str, unit: str, desc: str, *targets: Target, stack: bool = False,
          min0: bool = True, dashed: str = "") -> timeseries.Panel:
    p = (_base(timeseries.Panel(), title, unit, desc, list(targets))
         .line_width(1).fill_opacity(35 if stack else 8).show_points(cm.VisibilityMode.NEVER)
         .legend(common.VizLegendOptions().show_legend(True).display_mode(cm.LegendDisplayMode.TABLE)
                 .placement(cm.LegendPlacement.BOTTOM).calcs(["mean", "lastNotNull"])
                 .sort_by("Mean").sort_desc(True))
         .tooltip(common.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING))
         .color_scheme(dashboard.FieldColor().mode(dm.FieldColorModeId.PALETTE_CLASSIC)))
    if stack:
        p = p.stacking(common.StackingConfig().mode(cm.StackingMode.NORMAL))
    if min0:
        p = p.min(0)
    if dashed:  # series whose display name matches this regex: a dashed line, not stacked
        p = p.override_by_regexp(dashed, [
            dm.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}),
            dm.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
            dm.DynamicConfigValue(id_val="custom.stacking", value={"mode": "none", "group": "A"})])
    return p


def single(title: str, unit: str, desc: str, target: Target, *, thresholds=NEUTRAL,
           mappings=None, decimals: int | None = None, background: bool = False) -> stat.Panel:
    p = (_base(stat.Panel(), title, unit, desc, [target])
         .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
         .graph_mode(cm.BigValueGraphMode.NONE)
         .color_mode(cm.BigValueColorMode.BACKGROUND if background else cm.BigValueColorMode.VALUE)
         .text_mode(cm.BigValueTextMode.AUTO).justify_mode(cm.BigValueJustifyMode.AUTO)
         .thresholds(thresholds))
    if mappings:
        p = p.mappings(mappings)
    if decimals is not None:
        p = p.decimals(decimals)
    return p


def bars(title: str, unit: str, desc: str, target: Target, *, scheme=dm.FieldColorModeId.CONTINUOUS_GR_YL_RD,
         thresholds=None, max_val: float | None = None, links: list | None = None) -> bargauge.Panel:
    p = (_base(bargauge.Panel(), title, unit, desc, [target])
         .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
         .orientation(cm.VizOrientation.HORIZONTAL).display_mode(cm.BarGaugeDisplayMode.GRADIENT)
         .value_mode(cm.BarGaugeValueMode.COLOR).show_unfilled(True).min(0)
         .color_scheme(dashboard.FieldColor().mode(scheme)))
    if thresholds is not None:
        p = p.thresholds(thresholds)
    if max_val is not None:
        p = p.max(max_val)
    if links:
        p = p.data_links(links)
    return p


def grid(title: str, unit: str, desc: str, *targets: Target, columns: dict[str, str],
         sort_by: str = "", mappings=None, links: list | None = None) -> table.Panel:
    """A table of instant queries merged on their labels. ``columns``: field → display name, in
    order; fields not named are hidden ("Value #A" is query A's value)."""
    p = (_base(table.Panel(), title, unit, desc, list(targets), columns)
         .cell_height(cm.TableCellHeight.SM).show_header(True)
         .with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
         .with_transformation(dm.DataTransformerConfig(id_val="organize", options={
             "excludeByName": {"Time": True},
             "includeByName": {name: True for name in columns},
             "indexByName": {name: i for i, name in enumerate(columns)},
             "renameByName": columns})))
    if sort_by:
        p = p.sort_by([common.TableSortByFieldState().display_name(sort_by).desc(True)])
    if mappings:
        p = p.mappings(mappings)
    if links:
        p = p.data_links(links)
    return p


def instant(expr: str, legend: str = "", unit: str = "") -> Target:
    return Target(expr, legend, instant=True, unit=unit)


def tab(expr: str, unit: str = "") -> Target:
    return Target(expr, instant=True, table=True, unit=unit)


# --- dashboards -------------------------------------------------------------------------------

def variables(node: bool = False, catch_all: bool = False) -> list:
    def query(name: str, label: str, expr: str, desc: str):
        return (dashboard.QueryVariable(name).label(label).description(desc).query(expr).datasource(DS)
                .multi(True).include_all(True).all_value(".*")
                .current(dm.VariableOption(text=["All"], value=["$__all"], selected=True))
                .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC))

    out = [dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
           .description("The Prometheus that scrapes Wattprint and loads rules/wattprint.rules.yaml. "
                        f"Default: uid '{PROVISIONED_DS_UID}' (the compose quick start's); "
                        "elsewhere pick yours.")
           .current(dm.VariableOption(text="Prometheus", value=PROVISIONED_DS_UID, selected=True))]
    out.append(query("cluster", "Cluster", f"label_values({BUILD_INFO}, cluster)",
                     "The cluster label of a global view (Thanos, Mimir: each cluster's external label; "
                     "docs/fleet.md). Empty with one Prometheus per cluster; 'All' matches that."))
    if node:
        out.append(query("node", "Node", f'label_values({BUILD_INFO}{{{CLUSTER}}}, node)',
                         "Kubernetes node name (the `node` label the Helm chart's scrape config adds). "
                         "Empty outside Kubernetes: pick the instance instead."))
        out.append(query("instance", "Instance", f'label_values({BUILD_INFO}{{{CLUSTER}, node=~"$node"}}, instance)',
                         "Wattprint exporter instances (one per node): host:port, a pod IP in Kubernetes."))
    out += [
        query("namespace", "Namespace", f"label_values({ENERGY}{{{CLUSTER}}}, namespace)",
              "Kubernetes namespace of the endpoint (empty outside Kubernetes; 'All' matches it)."),
        query("endpoint", "Endpoint", f'label_values({ENERGY}{{{CLUSTER}, namespace=~"$namespace"}}, endpoint)',
              "Model endpoint (Deployment/StatefulSet, or <engine>-<port> outside Kubernetes); "
              "'unallocated' and 'system' are the catch-all series."),
        query("model", "Model", f'label_values({ENERGY}{{{CLUSTER}, namespace=~"$namespace", endpoint=~"$endpoint"}}, model)',
              "Served model name."),
    ]
    if catch_all:
        shown = [dm.VariableOption(text="excluded", value=NOT_ENDPOINTS, selected=True),
                 dm.VariableOption(text="included", value="^$", selected=False)]
        out.append(dashboard.CustomVariable("catch_all").label("Catch-all series")
                   .description("The ranked tables leave out the catch-all series (unallocated, system, "
                                "overflow) unless 'included' (then they show with their CO2e, no "
                                "per-request figure: they serve no requests).")
                   .values(f"excluded : {NOT_ENDPOINTS}, included : ^$").current(shown[0]).options(shown))
    return out


def build(title: str, uid: str, desc: str, rows: list[tuple[str, list[Cell]]], node: bool = False,
          catch_all: bool = False):
    d = (dashboard.Dashboard(title).uid(uid).description(desc).tags(TAGS)
         .time("now-6h", "now").refresh("1m").timezone("browser").editable()
         .tooltip(dm.DashboardCursorSync.CROSSHAIR)
         .annotation(dashboard.AnnotationQuery().name("Annotations & Alerts").built_in(1).enable(True)
                     .hide(True).icon_color("rgba(0, 211, 255, 1)").type("dashboard")
                     .datasource(dm.DataSourceRef(type_val="grafana", uid="-- Grafana --")))
         .link(dashboard.DashboardLink("Wattprint").type(dm.DashboardLinkType.DASHBOARDS).tags(["wattprint"])
               .as_dropdown(True).include_vars(True).keep_time(True)))
    for v in variables(node, catch_all):
        d = d.with_variable(v)
    y, pid = 0, 1
    for row_title, cells in rows:
        d = d.with_row(dashboard.Row(row_title).id(pid).grid_pos(dm.GridPos(x=0, y=y, w=24, h=1)))
        pid, y, x, line_h = pid + 1, y + 1, 0, 0
        for c in cells:
            if x + c.w > 24:
                x, y, line_h = 0, y + line_h, 0
            d = d.with_panel(c.panel.id(pid).grid_pos(dm.GridPos(x=x, y=y, w=c.w, h=c.h)))
            pid, x, line_h = pid + 1, x + c.w, max(line_h, c.h)
        y += line_h
    return d


def fleet_overview():
    actual_op = f'sum by ({BY_ENDPOINT}) (increase({CO2E}{s(SEL, OPERATIONAL)}[$__range]))'
    cf_by_region = f"sum by ({BY_ENDPOINT}, region) (increase({COUNTERFACTUAL}{s(SEL)}[$__range]))"
    inference_range = f"sum by (model) (increase({CO2E}{s(SEL, SERVED)}[$__range]))"
    training = f'max by (model) ({TRAINING}{{model=~"$model"}})'
    ranked = s(SEL, RANKED)
    co2e_t = f"{over_range(CO2E_1H_ROLLUP)} / {TONNE:g}"
    energy_kwh = f"{over_range(ENERGY_1H_ROLLUP)} / {KWH_J:g}"
    g_per_request = per_expr(f"sum_over_time({CO2E_1H_ROLLUP}{s(SEL)}[$__range])",
                             f"sum_over_time({REQUESTS_1H_ROLLUP}{s(SEL)}[$__range])")
    inference_year = over_range(CO2E_1H_ROLLUP, SERVED, by="model")
    this_period = {"namespace": "Namespace", "endpoint": "Endpoint", "model": "Model", "Value #A": "CO2e",
                   "Value #B": "Energy", "Value #C": "Requests", "Value #D": "CO2e per request"}

    def period(title: str, when: str, what: str):
        return grid(title, T, f"Per endpoint, {what}: CO2e (t, operational + embodied), energy (kWh), requests "
                    "and grams per request, summed from the hourly rollups (wattprint.rollup.1h), not from "
                    "increase() over raw counters, so it holds past the raw series' retention.",
                    tab(f"{co2e_t}"), tab(energy_kwh, KWH), tab(over_range(REQUESTS_1H_ROLLUP), NONE),
                    tab(f"{over_range(CO2E_1H_ROLLUP)} / ({over_range(REQUESTS_1H_ROLLUP)} > 0)", G),
                    columns=this_period, sort_by="CO2e", links=to_endpoint()).time_from(when)

    rows = [
        ("Now: selected endpoints", [
            Cell(single("Power", W, "Power attributed to the selected endpoints (5 min average, all "
                        "components).", instant(f"sum({POWER_5M}{s(SEL)})")), 4, 4),
            Cell(single("Emission rate", G_PER_H, "CO2e per hour of the selected endpoints, operational + "
                        "embodied (5 min average), priced sample by sample in the exporter.",
                        instant(f"3600 * sum({CO2E_RATE_5M}{s(SEL)})")), 4, 4),
            Cell(single("Emitted in the time range", G, "CO2e of the selected endpoints over the dashboard's "
                        "time range (operational + embodied).",
                        instant(f"sum(increase({CO2E}{s(SEL)}[$__range]))")), 4, 4),
            Cell(single("CO2e per request", G, "Grams CO2e per successful request over the last 5 min, "
                        "over the selected endpoints that report requests.",
                        instant(per(CO2E_RATE_5M, REQUESTS_5M))), 4, 4),
            Cell(single("Idle share", RATIO, "Share of the selected endpoints' energy that is idle draw "
                        "(GPUs reserved but not computing; CPU idle where configured), 5 min.",
                        instant(f'sum({COMPONENT_POWER_5M}{s(SEL, IDLE)}) / (sum({POWER_5M}{s(SEL)}) > 0)'),
                        thresholds=_thresholds((None, "green"), (0.5, "orange"), (0.8, "red"))), 4, 4),
            Cell(single("Effective intensity", G_PER_KWH, "Operational grams per kWh of the selected "
                        "endpoints' energy (grid intensity × PUE, weighted by where and when they ran), 5 min.",
                        instant(f'3.6e6 * sum({CO2E_RATE_5M}{s(SEL, OPERATIONAL)}) / (sum({POWER_5M}{s(SEL)}) > 0)')),
                 4, 4),
        ]),
        ("Power and emissions by endpoint", [
            Cell(graph("Power by endpoint", W, "Attributed power per endpoint (recording rule, 5 min "
                       "window), stacked: the stack is the fleet's measured power.",
                       Target(f"sum by ({BY_ENDPOINT}) ({POWER_5M}{s(SEL)})", LEGEND_ENDPOINT), stack=True), 12, 9),
            Cell(graph("CO2e emission rate by endpoint", G_PER_H, "Grams CO2e per hour per endpoint, "
                       "operational + embodied, stacked.",
                       Target(f"3600 * sum by ({BY_ENDPOINT}) ({CO2E_RATE_5M}{s(SEL)})", LEGEND_ENDPOINT),
                       stack=True), 12, 9),
        ]),
        ("Per request and per token", [
            Cell(graph("CO2e per request", G, "Grams CO2e per successful request (5 min window averages: "
                       "emissions in the window / requests in the window). Endpoints without request "
                       "counters have no line.", Target(f"{G_PER_REQUEST_5M}{s(SEL)}", LEGEND_ENDPOINT)), 12, 8),
            Cell(graph("CO2e per 1k generated tokens", G, "Grams CO2e per 1,000 generation tokens "
                       "(5 min window averages).", Target(f"{G_PER_1K_TOKENS_5M}{s(SEL)}", LEGEND_ENDPOINT)), 12, 8),
        ]),
        ("Which endpoint emits most per request", [
            Cell(grid("Endpoints ranked by CO2e per request (1 h)", G, "Grams CO2e per request over the last "
                      "hour (operational + embodied, window average), most first, with joules per request, "
                      "requests per second and the CO2e over the time range. The catch-all series "
                      "(unallocated, system) are left out unless the 'Catch-all series' variable includes "
                      "them. Click a row for the endpoint's detail.",
                      tab(f"{G_PER_REQUEST_1H}{ranked}"), tab(f"{J_PER_REQUEST_1H}{ranked}", J),
                      tab(f"{REQUESTS_1H}{ranked}", REQ_PER_S),
                      tab(f"sum by ({BY_ENDPOINT}) (increase({CO2E}{ranked}[$__range]))"),
                      columns={"cluster": "Cluster", "namespace": "Namespace", "endpoint": "Endpoint",
                               "model": "Model", "Value #A": "CO2e per request (1h)",
                               "Value #B": "Energy per request (1h)", "Value #C": "Requests/s (1h)",
                               "Value #D": "CO2e (time range)"},
                      sort_by="CO2e per request (1h)", links=to_endpoint()), 24, 8),
        ]),
        ("The same model across GPU types and regions", [
            Cell(grid("One model, every GPU type and region (1 h)", G, "Per model, GPU model and region "
                      "(wattprint.model rules: each node's GPU model and pricing region joined in once; "
                      "gpu_model 'mixed' is a node with several GPU models, 'none' one without GPUs): "
                      "grams CO2e and joules per request, joules per 1k generation tokens, traffic and power "
                      "over the last hour. Served models only.",
                      tab(f"{MODEL_G_PER_REQUEST_1H}{s(MODEL_SEL)}"),
                      tab(f"{MODEL_J_PER_REQUEST_1H}{s(MODEL_SEL)}", J),
                      tab(f"{MODEL_J_PER_1K_TOKENS_1H}{s(MODEL_SEL)}", J),
                      tab(f"{MODEL_REQUESTS_1H}{s(MODEL_SEL)}", REQ_PER_S),
                      tab(f"{MODEL_POWER_1H}{s(MODEL_SEL)}", W),
                      columns={"model": "Model", "gpu_model": "GPU model", "region": "Region", "cluster": "Cluster",
                               "Value #A": "CO2e per request", "Value #B": "Energy per request",
                               "Value #C": "Energy per 1k tokens", "Value #D": "Requests/s", "Value #E": "Power"},
                      sort_by="CO2e per request"), 14, 9),
            Cell(graph("CO2e per request by model, GPU model and region", G, "Grams CO2e per request "
                       "(5 min window averages) of each model on each GPU model in each region.",
                       Target(f"{MODEL_G_PER_REQUEST_5M}{s(MODEL_SEL)}", "{{model}} · {{gpu_model}} · {{region}}")),
                 10, 9),
        ]),
        ("Fixed (idle) vs marginal cost per request", [
            Cell(grid("Fixed vs marginal cost per request (1 h)", G, "Per endpoint, over the last hour: what one "
                      "more mean request costs (marginal, operational, from the exporter's energy model), the "
                      "reservation's fixed cost per request (idle energy's CO2e and embodied CO2e over the "
                      "requests) and the window average; fixed ÷ marginal over 10 for 2 h fires "
                      "WattprintReservationMostlyIdle.",
                      tab(f"{MARGINAL_G_PER_REQUEST_1H}{s(SEL)}"), tab(f"{IDLE_G_PER_REQUEST_1H}{s(SEL)}"),
                      tab(f"{G_PER_REQUEST_1H}{s(SEL)}"),
                      tab(f"{IDLE_G_PER_REQUEST_1H}{s(SEL)} / on ({BY_ENDPOINT}) ({MARGINAL_G_PER_REQUEST_1H}{s(SEL)} > 0)",
                          NONE),
                      columns={"endpoint": "Endpoint", "model": "Model", "Value #A": "Marginal",
                               "Value #B": "Fixed (idle + embodied)", "Value #C": "Average",
                               "Value #D": "Fixed ÷ marginal"},
                      sort_by="Fixed ÷ marginal", links=to_endpoint()), 14, 8),
            Cell(bars("Fixed share of the cost per request (1 h)", RATIO, "Fixed ÷ (fixed + marginal) per "
                      "request: near 100 %, holding the GPUs costs far more than using them — consolidate or "
                      "scale down.",
                      instant(f"{IDLE_G_PER_REQUEST_1H}{s(SEL)} / on ({BY_ENDPOINT}) ({IDLE_G_PER_REQUEST_1H}{s(SEL)} "
                              f"+ on ({BY_ENDPOINT}) {MARGINAL_G_PER_REQUEST_1H}{s(SEL)} > 0)", LEGEND_ENDPOINT),
                      max_val=1, links=to_endpoint("__field.labels")), 10, 8),
        ]),
        ("Who emits, and how much is idle", [
            Cell(bars("Top emitters (time range)", G, "The 10 endpoints with the most CO2e over the time "
                      "range, operational + embodied. Click a bar for the endpoint's detail.",
                      instant(f"topk(10, sum by ({BY_ENDPOINT}) (increase({CO2E}{s(SEL)}[$__range])))",
                              LEGEND_ENDPOINT), links=to_endpoint("__field.labels")), 8, 9),
            Cell(bars("Idle share by endpoint", RATIO, "Share of each endpoint's energy that is idle "
                      "draw (5 min). High: GPUs held but barely used — consolidate or scale down.",
                      instant(f"{IDLE_SHARE_5M}{s(SEL)}", LEGEND_ENDPOINT), max_val=1), 8, 9),
            Cell(graph("Idle share over time", RATIO, "Idle share per endpoint (5 min window).",
                       Target(f"{IDLE_SHARE_5M}{s(SEL)}", LEGEND_ENDPOINT)).max(1), 8, 9),
        ]),
        ("This month and this year (hourly rollups)", [
            Cell(single("CO2e this month", T, "CO2e of the selected endpoints since the start of the month "
                        "(operational + embodied), summed from the hourly rollups.",
                        instant(f"sum({co2e_t})")).time_from("now/M"), 4, 4),
            Cell(single("CO2e this year", T, "CO2e of the selected endpoints since the start of the year, "
                        "summed from the hourly rollups (keep them 13 months: docs/fleet.md).",
                        instant(f"sum({co2e_t})")).time_from("now/y"), 4, 4),
            Cell(single("Energy this month", KWH, "Energy attributed to the selected endpoints since the start "
                        "of the month, from the hourly rollups.", instant(f"sum({energy_kwh})")).time_from("now/M"), 4, 4),
            Cell(single("Energy this year", KWH, "Energy attributed to the selected endpoints since the start "
                        "of the year, from the hourly rollups.", instant(f"sum({energy_kwh})")).time_from("now/y"), 4, 4),
            Cell(single("CO2e per request this month", G, "This month's CO2e over this month's requests, over "
                        "the endpoints that report requests.", instant(g_per_request)).time_from("now/M"), 4, 4),
            Cell(single("CO2e per request this year", G, "This year's CO2e over this year's requests, over the "
                        "endpoints that report requests.", instant(g_per_request)).time_from("now/y"), 4, 4),
            Cell(period("By endpoint, this month", "now/M", "since the start of the month"), 12, 8),
            Cell(period("By endpoint, this year", "now/y", "since the start of the year"), 12, 8),
        ]),
        ("Deployment vs training, per model", [
            Cell(bars("Deployment share of each model's footprint (this year)", RATIO, "This year's inference "
                      "CO2e (hourly rollups) ÷ (that + the model's training footprint): how much of what the "
                      "model has cost so far is serving it. Models without a configured training footprint "
                      "(carbon.training_co2e_tonnes) have no bar.",
                      instant(f"{inference_year} / on (model) ({inference_year} + on (model) {training} > 0)",
                              "{{model}}"), max_val=1,
                      thresholds=_thresholds((None, "green"), (0.5, "orange"), (0.8, "red"))).time_from("now/y"), 8, 8),
            Cell(grid("Training vs deployment (this year)", T, "Per model, in tonnes: the training footprint "
                      "from configuration, this year's inference CO2e from the hourly rollups, and the "
                      "deployment share of the two.",
                      tab(f"{training} / {TONNE:g}"), tab(f"{inference_year} / {TONNE:g}"),
                      tab(f"{inference_year} / on (model) ({inference_year} + on (model) {training} > 0)", RATIO),
                      columns={"model": "Model", "Value #A": "Training", "Value #B": "Deployment (this year)",
                               "Value #C": "Deployment share"}, sort_by="Deployment share").time_from("now/y"), 16, 8),
        ]),
        ("Deployment phase vs training footprint", [
            Cell(bars("Inference CO2e as a share of training", RATIO, "CO2e of serving each model over the "
                      "time range, as a share of its training footprint (carbon.training_co2e_tonnes). "
                      "100 %: this period's inference has emitted as much as training did.",
                      instant(f"{inference_range} / on (model) ({training} > 0)", "{{model}}"),
                      thresholds=_thresholds((None, "green"), (0.5, "orange"), (1, "red"))), 8, 8),
            Cell(grid("Training footprint vs deployment phase", G, "Per model: training footprint from "
                      "configuration (t), inference CO2e over the time range, their ratio, and how long "
                      "serving at the last hour's rate takes to emit one training footprint.",
                      tab(f"{training} / {TONNE:g}", T), tab(inference_range),
                      tab(f"{inference_range} / on (model) ({training} > 0)", RATIO),
                      tab(f"{training} / on (model) (sum by (model) ({CO2E_RATE_1H}{s(SEL)}) > 0)", S),
                      columns={"model": "Model", "Value #A": "Training", "Value #B": "Inference (range)",
                               "Value #C": "Inference / training",
                               "Value #D": "Time to equal training (1h rate)"},
                      sort_by="Inference / training"), 16, 8),
        ]),
        ("Where it would be cleaner: grid intensity and counterfactual regions", [
            Cell(graph("Grid intensity by region", G_PER_KWH, "Carbon intensity each exporter uses "
                       "(signal=average feeds the totals; marginal is advice only).",
                       Target(f"max by (region, zone, provider, signal) ({INTENSITY})",
                              "{{region}} · {{signal}} ({{provider}})")), 8, 9),
            Cell(bars("Savings in the cleanest candidate region (time range)", G, "Operational CO2e each "
                      "endpoint would not have emitted over the time range had it run in its cleanest "
                      "candidate region (carbon.counterfactual_regions; same energy and PUE).",
                      instant(f"{actual_op} - on ({BY_ENDPOINT}) min by ({BY_ENDPOINT}) ({cf_by_region})",
                              LEGEND_ENDPOINT), scheme=dm.FieldColorModeId.CONTINUOUS_BL_PU), 8, 9),
            Cell(grid("Cleanest candidate per endpoint", RATIO, "For each endpoint, the candidate region "
                      "with the lowest counterfactual CO2e over the time range and the share of "
                      "operational CO2e it would save.",
                      tab(f"1 - (bottomk by ({BY_ENDPOINT}) (1, {cf_by_region}) / on ({BY_ENDPOINT}) "
                          f"group_left () ({actual_op} > 0))"),
                      columns={"endpoint": "Endpoint", "model": "Model", "region": "Cleanest region",
                               "Value": "Saving"}, sort_by="Saving"), 8, 9),
            Cell(grid("Counterfactual CO2e by candidate region (time range)", G, "What each endpoint's "
                      "energy over the time range would have emitted in each candidate region, and the "
                      "change against what it emitted here (negative: cleaner there).",
                      tab(f"0 * {cf_by_region} + on ({BY_ENDPOINT}) group_left () ({actual_op} > 0)"),
                      tab(cf_by_region),
                      tab(f"{cf_by_region} / on ({BY_ENDPOINT}) group_left () ({actual_op} > 0) - 1", RATIO),
                      columns={"namespace": "Namespace", "endpoint": "Endpoint", "model": "Model",
                               "region": "Candidate region", "Value #B": "Counterfactual",
                               "Value #A": "Actual (operational)", "Value #C": "Change vs actual"}), 24, 8),
        ]),
    ]
    return build("Wattprint / Fleet overview", "wattprint-fleet-overview",
                 "Energy and CO2e of AI inference per model endpoint, across every node Wattprint runs "
                 "on: power, emissions, grams per request and per token ranked, the same model across GPU "
                 "types and regions, fixed vs marginal cost, idle draw, this month and this year, the "
                 "training footprint and the counterfactual regions.", rows, catch_all=True)


def endpoint_detail():
    budget = f"max by ({BY_ENDPOINT}) ({BUDGET}{s(SEL)})"
    rows = [
        ("Now", [
            Cell(single("Power", W, "Attributed power, 5 min average.", instant(f"sum({POWER_5M}{s(SEL)})")), 4, 4),
            Cell(single("Energy per request", J, "Joules per successful request, 5 min.",
                        instant(per(POWER_5M, REQUESTS_5M))), 4, 4),
            Cell(single("Energy per generated token", J, "Joules per generation token, 5 min.",
                        instant(per(POWER_5M, TOKENS_5M))), 4, 4),
            Cell(single("CO2e per request (1h)", G, "Grams CO2e per request over the last hour: the figure "
                        "the budget alert compares.",
                        instant(per(CO2E_RATE_1H, REQUESTS_1H))), 4, 4),
            Cell(single("Budget per request", G, "Configured budget (engines.budgets), the tightest "
                        "of the selected endpoints.", instant(f"min({BUDGET}{s(SEL)})")), 4, 4),
            Cell(single("Budget used (1h, worst)", RATIO, "CO2e per request over the last hour as a share "
                        "of the budget, the worst selected endpoint. Over 100 % for 15 min fires "
                        "WattprintEndpointOverCarbonBudget.",
                        instant(f"max({G_PER_REQUEST_1H}{s(SEL)} / on ({BY_ENDPOINT}) {budget})"),
                        thresholds=_thresholds((None, "green"), (0.8, "orange"), (1, "red")), background=True), 4, 4),
        ]),
        ("Energy split", [
            Cell(graph("Power by component and mode", W, "GPU, CPU and DRAM power, active (used) and idle "
                       "(reserved), stacked (5 min window).",
                       Target(f"sum by (component, mode) ({COMPONENT_POWER_5M}{s(SEL)})", "{{component}} {{mode}}"),
                       stack=True), 12, 9),
            Cell(bars("Energy in the time range", J, "Energy by component and mode over the time range.",
                      instant(f"sum by (component, mode) (increase({ENERGY}{s(SEL)}[$__range]))",
                              "{{component}} {{mode}}"), scheme=dm.FieldColorModeId.CONTINUOUS_BL_PU), 6, 9),
            Cell(graph("Idle share", RATIO, "Idle share of all the endpoint's energy and of its GPU energy "
                       "(5 min window).",
                       Target(f"{IDLE_SHARE_5M}{s(SEL)}", "{{endpoint}} · all"),
                       Target(f"{GPU_IDLE_SHARE_5M}{s(SEL)}", "{{endpoint}} · GPU")).max(1), 6, 9),
        ]),
        ("Efficiency and traffic", [
            Cell(graph("Energy per generated token", J, "Joules per generation token (5 min window averages).",
                       Target(f"{J_PER_1K_TOKENS_5M}{s(SEL)} / 1000", LEGEND_ENDPOINT)), 8, 8),
            Cell(graph("Energy per request", J, "Joules per successful request (5 min window averages).",
                       Target(f"{J_PER_REQUEST_5M}{s(SEL)}", LEGEND_ENDPOINT)), 8, 8),
            Cell(graph("Requests and tokens per second", REQ_PER_S, "Successful requests per second and "
                       "generation tokens per second, from the inference server's own counters.",
                       Target(f"{REQUESTS_5M}{s(SEL)}", LEGEND_ENDPOINT + " requests"),
                       Target(f"{TOKENS_5M}{s(SEL)}", LEGEND_ENDPOINT + " tokens", unit=TOKENS_PER_S)), 8, 8),
        ]),
        ("What one more request costs", [
            Cell(graph("Marginal energy per token, 95 % band", J, "What one more prompt token (prefill) or "
                       "generated token (decode) costs in active energy, fitted by the exporter from the "
                       "endpoint's own traffic over the last hour; the dashed lines are ±1.96 standard "
                       "errors. Absent while the fit is not identified (see the health table).",
                       Target(f"{MARGINAL_J_5M}{s(SEL)}", LEGEND_ENDPOINT + " {{phase}}"),
                       Target(f"{MARGINAL_J_5M}{s(SEL)} - 1.96 * {MARGINAL_SE_5M}{s(SEL)}",
                              LEGEND_ENDPOINT + " {{phase}} low"),
                       Target(f"{MARGINAL_J_5M}{s(SEL)} + 1.96 * {MARGINAL_SE_5M}{s(SEL)}",
                              LEGEND_ENDPOINT + " {{phase}} high"), dashed=".* (low|high)$"), 8, 9),
            Cell(graph("Fixed vs marginal cost per request", G, "Grams CO2e per request: what one more "
                       "mean request costs (marginal, operational), the window average (operational + "
                       "embodied, idle included), and the reservation's fixed cost per request (idle "
                       "energy's CO2e and embodied CO2e over the requests, 5 min).",
                       Target(f"{MARGINAL_G_PER_REQUEST_5M}{s(SEL)}", LEGEND_ENDPOINT + " marginal"),
                       Target(f"{G_PER_REQUEST_5M}{s(SEL)}", LEGEND_ENDPOINT + " average"),
                       Target(f"{IDLE_G_PER_REQUEST_5M}{s(SEL)}", LEGEND_ENDPOINT + " fixed")), 8, 9),
            Cell(grid("Energy model health", NONE, "Per exporter instance: the fit's state (fitted, or why "
                      "nothing is published: too_few_windows, collinear, …), its windows, the share of "
                      "the windows' active energy it explains (R²) and the active power the tokens do not "
                      "explain.",
                      tab(f"max by (instance, {BY_ENDPOINT}, state) ({MODEL_WINDOWS}{s(SEL)} * on (instance, "
                          f"{BY_ENDPOINT}) group_left (state) ({MODEL_STATE}{s(SEL)} == 1))"),
                      tab(f"max by (instance, {BY_ENDPOINT}, state) ({MODEL_R2}{s(SEL)} * on (instance, "
                          f"{BY_ENDPOINT}) group_left (state) ({MODEL_STATE}{s(SEL)} == 1))", unit=RATIO),
                      tab(f"max by (instance, {BY_ENDPOINT}, state) ({MODEL_FIXED_W}{s(SEL)} * on (instance, "
                          f"{BY_ENDPOINT}) group_left (state) ({MODEL_STATE}{s(SEL)} == 1))", unit=W),
                      columns={"endpoint": "Endpoint", "model": "Model", "instance": "Instance", "state": "State",
                               "Value #A": "Windows", "Value #B": "R²", "Value #C": "Fixed active W"}), 8, 9),
        ]),
        ("Emissions and budget", [
            Cell(graph("CO2e per request vs budget", G, "Grams CO2e per request over 5 min and over 1 h "
                       "(the alert's window) against the configured budget (dashed).",
                       Target(f"{G_PER_REQUEST_5M}{s(SEL)}", LEGEND_ENDPOINT + " (5m)"),
                       Target(f"{G_PER_REQUEST_1H}{s(SEL)}", LEGEND_ENDPOINT + " (1h)"),
                       Target(budget, LEGEND_ENDPOINT + " budget"), dashed=".* budget$"), 12, 9),
            Cell(graph("Emission rate by scope", G_PER_H, "Grams CO2e per hour: operational (energy × grid "
                       "intensity × PUE) and embodied (GPU and server manufacturing, amortised).",
                       Target(f"3600 * sum by (scope) ({CO2E_RATE_5M}{s(SEL)})", "{{scope}}"), stack=True), 6, 9),
            Cell(grid("Alerts", NONE, "Wattprint alerts for the selected endpoints, pending or firing "
                      "(Prometheus ALERTS). Empty is good.",
                      tab('sum by (alertname, alertstate, severity, reason, namespace, endpoint, model) '
                          '(ALERTS{alertname=~"Wattprint.*", ' + SEL + "})"),
                      columns={"alertname": "Alert", "alertstate": "State", "severity": "Severity",
                               "reason": "Reason", "endpoint": "Endpoint", "model": "Model"}), 6, 9),
        ]),
    ]
    where = (f"sum by (cluster, node, instance, endpoint, model) (rate({ENERGY}{s(SEL)}[$__rate_interval])) "
             f"* on (cluster, instance) group_left (gpu_model, region) {PLACEMENT}")
    rows.append(("Where it runs, and the same model elsewhere", [
        Cell(grid("Nodes serving it", W, "Each node (exporter instance) the selected endpoints draw power on "
                  "now, with its GPU model and the region its energy is priced in. Click a row for the "
                  "node's detail.",
                  tab(where),
                  columns={"endpoint": "Endpoint", "model": "Model", "node": "Node", "instance": "Instance",
                           "gpu_model": "GPU model",
                           "region": "Region", "Value": "Power"}, sort_by="Power", links=to_node()), 12, 8),
        Cell(grid("This model on every GPU type and region (1 h)", G, "The selected models wherever they run "
                  "(every endpoint serving them): grams CO2e and joules per request by GPU model and region, "
                  "over the last hour (wattprint.model rules).",
                  tab(f"{MODEL_G_PER_REQUEST_1H}{s(MODEL_SEL)}"), tab(f"{MODEL_J_PER_REQUEST_1H}{s(MODEL_SEL)}", J),
                  tab(f"{MODEL_REQUESTS_1H}{s(MODEL_SEL)}", REQ_PER_S),
                  columns={"model": "Model", "gpu_model": "GPU model", "region": "Region",
                           "Value #A": "CO2e per request", "Value #B": "Energy per request", "Value #C": "Requests/s"},
                  sort_by="CO2e per request"), 12, 8),
    ]))
    return build("Wattprint / Endpoint detail", "wattprint-endpoint-detail",
                 "One model endpoint (or a few): where its energy goes, how efficient it is, what one "
                 "more request costs against what holding it costs, what it emits per request against "
                 "its budget, and its alerts.", rows)


def node_detail():
    rate = "[$__rate_interval]"
    node_power = f"sum(rate({NODE_ENERGY}{s(INST)}{rate}))"
    wattprint = f"on (instance, job) {BUILD_INFO}"  # the exporter's own process_* series only
    rows = [
        ("Node", [
            Cell(single("Node power", W, "Measured node power: GPUs + CPU packages + DRAM, never "
                        "overlapping RAPL zones.", instant(node_power)), 4, 4),
            Cell(single("GPU power", W, "All GPUs, from their energy counters.",
                        instant(f"sum(rate({GPU_ENERGY}{s(INST)}{rate}))")), 4, 4),
            Cell(single("GPUs", NONE, "GPUs the exporter sees.", instant(f"count({GPU_INFO}{s(INST)})")), 4, 4),
            Cell(single("CPU busy", RATIO, "Node CPU busy fraction.", instant(f"avg({CPU_BUSY}{s(INST)})")), 4, 4),
            Cell(single("Attributed to endpoints", RATIO, "Share of the node's energy attributed to model "
                        "endpoints; the rest is unallocated GPUs and system CPU.",
                        instant(f'sum(rate({ENERGY}{s(INST, ENDPOINTS_ONLY)}{rate})) / ({node_power} > 0)'),
                        thresholds=_thresholds((None, "red"), (0.5, "orange"), (0.8, "green"))), 4, 4),
            Cell(single("Attributed ÷ measured", RATIO, "Conservation check: every joule lands in exactly "
                        "one endpoint series, so this is 100 %.",
                        instant(f"sum(rate({ENERGY}{s(INST)}{rate})) / ({node_power} > 0)"),
                        thresholds=_thresholds((None, "red"), (0.99, "green"), (1.01, "red")), decimals=1), 4, 4),
        ]),
        ("GPUs", [
            Cell(graph("Power per GPU", W, "Each GPU's power from its energy counter, and the idle baseline "
                       "that splits it into idle and active (dashed).",
                       Target(f"sum by (instance, gpu, name) (rate({GPU_ENERGY}{s(INST)}{rate}))", "GPU {{gpu}} {{name}}"),
                       Target(f"max by (instance, gpu, source) ({GPU_IDLE}{s(INST)})", "GPU {{gpu}} idle baseline ({{source}})"),
                       dashed=".*idle baseline.*"), 12, 9),
            Cell(graph("GPU memory used", unit_of(GPU_MEM_USED), "Memory in use per GPU (idle energy is "
                       "split by memory held).", Target(f"{GPU_MEM_USED}{s(INST)}", "GPU {{gpu}}"), stack=True), 6, 9),
            Cell(grid("GPU inventory", NONE, "Per GPU: energy method, MIG mode, backend (simulated "
                      "GPUs say so), resident processes and memory in use.",
                      tab(f"max by (instance, gpu, name, energy_method, mig_mode, backend) ({GPU_INFO}{s(INST)})"),
                      tab(f"max by (instance, gpu, name) ({GPU_PROCS}{s(INST)})"),
                      tab(f"max by (instance, gpu, name) ({GPU_MEM_USED}{s(INST)} / {GPU_MEM_TOTAL}{s(INST)})", RATIO),
                      columns={"gpu": "GPU", "name": "Name", "energy_method": "Energy", "mig_mode": "MIG",
                               "backend": "Backend", "Value #B": "Processes", "Value #C": "Memory used"}), 6, 9),
        ]),
        ("CPU and DRAM", [
            Cell(graph("CPU power by RAPL zone or estimate", W, "Power per CPU energy zone "
                       "(method=rapl) or from the utilisation model (method=estimate). Zones overlap "
                       "(package ⊃ core, psys ⊃ package): read them side by side, never add them up.",
                       Target(f"sum by (instance, socket, domain, method) (rate({CPU_ENERGY}{s(INST)}{rate}))",
                              "socket {{socket}} {{domain}} ({{method}})")), 12, 9),
            Cell(graph("Node power by component", W, "GPU, CPU and DRAM: the non-overlapping components "
                       "attribution splits, stacked.",
                       Target(f"sum by (component) (rate({NODE_ENERGY}{s(INST)}{rate}))", "{{component}}"),
                       stack=True), 6, 9),
            Cell(graph("CPU busy", RATIO, "Node CPU busy fraction per sample.",
                       Target(f"{CPU_BUSY}{s(INST)}", "{{instance}}")).max(1), 6, 9),
        ]),
        ("Attribution coverage", [
            Cell(graph("Share of node energy by endpoint", RATIO, "Where the node's energy goes: each "
                       "endpoint's share, with 'unallocated' (GPUs without a process) and 'system' (CPU "
                       "energy of no endpoint), stacked to 100 %.",
                       Target(f"sum by (endpoint) (rate({ENERGY}{s(INST, SEL)}{rate})) / ignoring (endpoint) "
                              f"group_left () ({node_power} > 0)", "{{endpoint}}"), stack=True).max(1), 12, 9),
            Cell(graph("Unallocated and system power", W, "Energy no endpoint caused or reserved, by "
                       "component and mode.",
                       Target(f'sum by (endpoint, component, mode) (rate({ENERGY}{s(INST, CATCH_ALL)}{rate}))',
                              "{{endpoint}} {{component}} {{mode}}"), stack=True), 6, 9),
            Cell(single("Series folded (time range)", NONE, "Label sets folded into endpoint=\"overflow\" "
                        "because the cardinality cap (--attribution.max-series) was reached; 0 is normal.",
                        instant(f"sum(increase({FOLDED}{s(INST)}[$__range])) or vector(0)"),
                        thresholds=_thresholds((None, "green"), (1, "orange"))), 6, 9),
        ]),
        ("Exporter health and overhead", [
            Cell(single("Collectors", NONE, "1 (up) when each collector's last read succeeded. "
                        "collector=\"gpu\" is down on hosts without an NVIDIA driver, which is normal.",
                        instant(f"max by (collector) ({COLLECTOR_UP}{s(INST)})", "{{collector}}"),
                        mappings=UP_DOWN, background=True,
                        thresholds=_thresholds((None, "red"), (1, "green"))), 8, 5),
            Cell(single("Inference server scrapes", NONE, "1 (up) when the exporter read the endpoint's "
                        "inference-server /metrics at the last attempt (requests and tokens come from it).",
                        instant(f"max by ({BY_ENDPOINT}, engine) ({ENGINE_UP}{s(INST, SEL)})",
                                LEGEND_ENDPOINT + " ({{engine}})"),
                        mappings=UP_DOWN, background=True,
                        thresholds=_thresholds((None, "red"), (1, "green"))), 8, 5),
            Cell(grid("Errors (time range)", NONE, "Collector read errors and inference-server scrape errors "
                      "by kind over the time range; a failing collector never stops the sampling loop.",
                      tab(f"sum by (collector, kind) (increase({COLLECTOR_ERRORS}{s(INST)}[$__range])) > 0"),
                      tab(f"sum by (endpoint, engine, kind) (increase({ENGINE_ERRORS}{s(INST)}[$__range])) > 0"),
                      columns={"collector": "Collector", "endpoint": "Endpoint", "engine": "Engine",
                               "kind": "Kind", "Value #A": "Collector errors", "Value #B": "Scrape errors"}), 8, 5),
            Cell(graph("Sample duration and age", S, "Wall time of each sample and the age of the last one "
                       "(stays under the sample interval while the loop runs).",
                       Target(f"{SAMPLE_DURATION}{s(INST)}", "{{instance}} duration"),
                       Target(f"time() - {LAST_SAMPLE}{s(INST)}", "{{instance}} age"),
                       Target(f"{SAMPLE_INTERVAL}{s(INST)}", "{{instance}} interval"),
                       dashed=".* interval$"), 8, 8),
            Cell(graph("Exporter CPU", RATIO, "CPU time of the exporter process, as a fraction of one core.",
                       Target(f"rate(process_cpu_seconds_total{s(INST)}{rate}) and {wattprint}", "{{instance}}")),
                 8, 8),
            Cell(graph("Exporter memory (RSS)", BYTES, "Resident memory of the exporter process.",
                       Target(f"process_resident_memory_bytes{s(INST)} and {wattprint}", "{{instance}}")), 8, 8),
        ]),
    ]
    return build("Wattprint / Node detail", "wattprint-node-detail",
                 "One node: GPU and CPU power as measured, how much of it is attributed to endpoints, "
                 "and the exporter's own health and overhead.", rows, node=True)


DASHBOARDS = {
    "wattprint-fleet-overview.json": fleet_overview,
    "wattprint-endpoint-detail.json": endpoint_detail,
    "wattprint-node-detail.json": node_detail,
}


def render() -> dict[str, str]:
    """File name → JSON text of every dashboard."""
    return {name: json.dumps(fn().build(), cls=JSONEncoder, indent=2, ensure_ascii=False) + "\n"
            for name, fn in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a committed JSON file is not current")
    ap.add_argument("--out", type=Path, default=HERE, help="where to write (default: dashboards/)")
    args = ap.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = args.out / name
        old = path.read_text() if path.exists() else ""
        if args.check:
            if old != text:
                stale.append(name)
                sys.stdout.writelines(list(difflib.unified_diff(
                    old.splitlines(keepends=True), text.splitlines(keepends=True),
                    f"{name} (committed)", f"{name} (generated)", n=1))[:40])
        elif old != text:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    if stale:
        print(f"\nstale: {', '.join(stale)}; run: python dashboards/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
