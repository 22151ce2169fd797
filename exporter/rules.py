"""The Prometheus recording and alerting rules, for code that needs them.

The rules are written once, as a template (``exporter/rules.template.yaml``, shipped in the
package), with the labels that differ between deployments as parameters, mixin-style:

- ``cluster_label``: the label that tells clusters apart in a global view (Thanos, Mimir, a central
  Prometheus fed by remote-write: each cluster's Prometheus adds it as an external label). Every
  per-endpoint aggregation keeps it. Empty: one Prometheus per cluster, no such label.
- ``job_selector``: the matcher that finds the exporter's scrape jobs in ``up{…}``.
- ``runbook_url``: where ``docs/runbook.md`` is published; every alert links there, absolutely
  (Alertmanager and Slack cannot follow a relative path).
- ``thresholds``: the alerts' numeric thresholds by name (:data:`THRESHOLDS`, the defaults), in
  their expressions and in the descriptions that state them. ``None`` leaves the ``__T:name__``
  tokens in place: the Helm chart's copy, which fills them from its values.

:func:`generate` fills them in (``wattprint rules`` on the command line). The repository's
``rules/wattprint.rules.yaml`` is the template generated with the defaults: ``promtool`` checks and
unit-tests it (``rules/tests/``), the Helm chart embeds it, and :func:`load` reads it (tests,
dashboards, docs); tests/test_rules.py checks it is current.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

RULES_FILE = "wattprint.rules.yaml"
TEMPLATE = Path(__file__).resolve().parent / "rules.template.yaml"
RUNBOOK = "https://github.com/wattprint/wattprint/blob/main/docs/runbook.md"  # the project's own docs
DEFAULT_CLUSTER_LABEL = "cluster"
DEFAULT_JOB_SELECTOR = 'job=~".*wattprint.*"'
# Labels the rules make that no exported metric has: the GPU model and region a model's series
# were measured under (group wattprint.model: gpu_model from wattprint_gpu_info{name}, region
# from wattprint_carbon_info{region}, joined per node).
DERIVED_LABELS = ("gpu_model", "region")
# the alerts' numeric thresholds (template tokens __T:name__) and their defaults
THRESHOLDS: dict[str, float] = {
    "budget_min_requests_per_second": 0.05,   # WattprintEndpointOverCarbonBudget's traffic floor
    "idle_cost_ratio": 10,                    # WattprintReservationMostlyIdle: idle cost / marginal cost
    "efficiency_regression_percent": 125,     # WattprintEfficiencyRegression: J/token vs a week ago
    "efficiency_min_generation_tokens_per_second": 10,  # ... in both hours
    "gpu_idle_share": 0.9,                    # WattprintGpuIdleWithEndpointResident: idle share of GPU energy
    "gpu_idle_active_watts": 50,              # ... and under this active GPU power
    "intensity_max_age_seconds": 3600,        # WattprintIntensityStale: age of the live reading
}
_THRESHOLD = re.compile(r"__T:([a-z_]+)__")
_ENV = "WATTPRINT_RULES_FILE"
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_ONE_MATCHER = r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(?:=|!=|=~|!~)\s*"(?:[^"\\]|\\.)*"\s*'
_MATCHERS = re.compile(f"{_ONE_MATCHER}(?:,{_ONE_MATCHER})*")  # a="x", b=~"y,z"


def _number(v: float) -> str:
    """A PromQL number literal as a person writes it: 10, 0.05, 3600."""
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))


def generate(cluster_label: str = DEFAULT_CLUSTER_LABEL, job_selector: str = DEFAULT_JOB_SELECTOR,
             runbook_url: str = RUNBOOK, thresholds: dict[str, float] | None = THRESHOLDS) -> str:
    """The rules file (YAML text) for these parameters (see the module); ValueError names a bad one."""
    if thresholds is not None:
        unknown = sorted(set(thresholds) - set(THRESHOLDS))
        if unknown:
            raise ValueError(f"threshold {unknown[0]!r}: not one of {', '.join(THRESHOLDS)}")
        for name, v in thresholds.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1e12:
                raise ValueError(f"threshold {name}={v!r}: must be a number >= 0")
        thresholds = {**THRESHOLDS, **thresholds}
    if cluster_label and (not _LABEL.fullmatch(cluster_label) or cluster_label.startswith("__")
                          or cluster_label in ("namespace", "endpoint", "model", "instance", *DERIVED_LABELS)):
        raise ValueError(f"cluster label {cluster_label!r}: must be a Prometheus label name "
                         "([a-zA-Z_][a-zA-Z0-9_]*), not namespace/endpoint/model/instance/gpu_model/region, or empty for none")
    if not _MATCHERS.fullmatch(job_selector):
        raise ValueError(f"job selector {job_selector!r}: must be label matchers, e.g. job=~\".*wattprint.*\" "
                         'or job="wattprint", namespace="monitoring"')
    if not runbook_url.startswith(("https://", "http://")) or "#" in runbook_url:
        raise ValueError(f"runbook URL {runbook_url!r}: must be an absolute http(s) URL of the runbook page, "
                         "without a #fragment")
    cluster = [cluster_label] if cluster_label else []
    by = ", ".join(cluster + ["namespace", "endpoint", "model"])
    node = ", ".join(cluster + ["instance"])
    place = ", ".join(cluster + ["model", *DERIVED_LABELS])
    selq = ", ".join(f"{lab}=%q" for lab in by.split(", "))
    selv = " ".join(f"$labels.{lab}" for lab in by.split(", "))
    text = TEMPLATE.read_text(encoding="utf-8")
    head, sep, body = text.partition("\ngroups:\n")
    header = ("# Wattprint recording and alerting rules, generated from exporter/rules.template.yaml by\n"
              f"# `wattprint rules --rules.cluster-label={cluster_label!s} --rules.job-selector='{job_selector}' "
              f"--rules.runbook-url={runbook_url}"
              + "".join(f" --rules.threshold={k}={_number(v)}" for k, v in (thresholds or {}).items()
                        if v != THRESHOLDS[k]) + "`.\n"
              "# Edit the template, not this file. Plain Prometheus YAML: the {{ ... }} are Prometheus alert\n"
              "# templates (a Helm chart must embed this file with .Files.Get, never through `tpl`).\n#\n")
    notes = head[head.index("# Naming"):]  # the template's notes on the rules themselves
    out = header + notes + sep + body
    for token, value in (("__SELQ__", selq), ("__SELV__", selv), ("__BY__", by), ("__NODE__", node),
                         ("__PLACE__", place), ("__JOB__", job_selector.strip()),
                         ("__RUNBOOK__", runbook_url)):
        out = out.replace(token, value)
    if thresholds is not None:
        out = _THRESHOLD.sub(lambda m: _number(thresholds[m.group(1)]), out)
    return out


def add_cli(sub: Any) -> None:
    """``wattprint rules``: print (or write) the rules file for this deployment's labels."""
    import argparse

    p = sub.add_parser(
        "rules", help="generate the Prometheus recording and alerting rules for your labels",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print Wattprint's recording and alerting rules (Prometheus rule-file YAML) with the "
        "labels of your deployment filled in. The repository's rules/wattprint.rules.yaml and the Helm "
        "chart's PrometheusRule are this output with the defaults.",
        epilog="examples:\n"
        "  wattprint rules > wattprint.rules.yaml                       # defaults\n"
        "  wattprint rules --rules.cluster-label=k8s_cluster            # a Thanos/Mimir global view\n"
        "  wattprint rules --rules.cluster-label= --rules.job-selector='job=\"wattprint\"'  # one cluster\n"
        "  promtool check rules wattprint.rules.yaml")
    p.add_argument("--rules.cluster-label", dest="cluster_label", default=DEFAULT_CLUSTER_LABEL,
                   help="label that tells clusters apart (each cluster's Prometheus adds it as an external "
                   f"label); kept by every per-endpoint aggregation; empty for none (default: {DEFAULT_CLUSTER_LABEL})")
    p.add_argument("--rules.job-selector", dest="job_selector", default=DEFAULT_JOB_SELECTOR,
                   help=f"label matchers of the exporter's scrape jobs in up{{…}} (default: {DEFAULT_JOB_SELECTOR})")
    p.add_argument("--rules.runbook-url", dest="runbook_url", default=RUNBOOK,
                   help=f"absolute URL of the published runbook page, alerts link to its sections (default: {RUNBOOK})")
    p.add_argument("--rules.threshold", dest="thresholds", action="append", default=[], metavar="NAME=VALUE",
                   help="an alert threshold, repeatable; names and defaults: "
                   + ", ".join(f"{k}={_number(v)}" for k, v in THRESHOLDS.items()))
    p.add_argument("-o", "--output", default="-", help="file to write (default: standard output)")

    def run(args: argparse.Namespace) -> int:
        import sys

        try:
            given: dict[str, float] = {}
            for item in args.thresholds:
                name, sep, v = item.partition("=")
                try:
                    given[name.strip()] = float(v)
                except ValueError:
                    raise ValueError(f"--rules.threshold {item!r}: need NAME=NUMBER") from None
                if not sep:
                    raise ValueError(f"--rules.threshold {item!r}: need NAME=NUMBER")
            text = generate(args.cluster_label, args.job_selector, args.runbook_url, given)
        except ValueError as e:
            print(f"wattprint rules: {e}", file=sys.stderr)
            return 2
        if args.output == "-":
            sys.stdout.write(text)
        else:
            Path(args.output).write_text(text, encoding="utf-8")
        return 0

    p.set_defaults(func=run)


def path() -> Path:
    """The rules file: ``$WATTPRINT_RULES_FILE`` if set, else ``<source tree>/rules/wattprint.rules.yaml``."""
    p = Path(os.environ[_ENV]) if os.environ.get(_ENV) else (
        Path(__file__).resolve().parent.parent / "rules" / RULES_FILE)
    if not p.is_file():
        raise FileNotFoundError(
            f"{p}: the rules file is not there. It lives in the source tree (rules/{RULES_FILE}) "
            f"and is not installed with the package; point {_ENV} at a copy.")
    return p


def load(runbook_url: str | None = None) -> dict[str, Any]:
    """The parsed rules file (``{"groups": [...]}``). With ``runbook_url`` (the published runbook,
    e.g. ``https://git.example.com/wattprint/blob/v0.2.0/docs/runbook.md``), every alert's
    ``runbook_url`` annotation points there instead of the project's."""
    doc = yaml.safe_load(path().read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list):
        raise ValueError(f"{path()}: expected a mapping with a 'groups' list")
    if runbook_url:  # the published runbook instead of the project's
        base = runbook_url.split("#", 1)[0]
        for rule in _rules(doc):
            ann = rule.get("annotations") or {}
            url = ann.get("runbook_url")
            if isinstance(url, str) and url.startswith(RUNBOOK):
                ann["runbook_url"] = base + url[len(RUNBOOK):]
    return doc


def _rules(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for group in doc["groups"]:
        yield from group.get("rules") or []


def recording_rules(doc: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every ``record:`` rule, in file order."""
    return [r for r in _rules(doc or load()) if "record" in r]


def alerting_rules(doc: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every ``alert:`` rule, in file order (one alert name may have several rules)."""
    return [r for r in _rules(doc or load()) if "alert" in r]


# --- a small PromQL reader: enough to check names, not a parser ------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}")
_MATCHER_KEY = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_IDENT = re.compile(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*+)(?!\s*\()")  # possessive: no backtracking into "rat(e"
_NUMBER_OR_DURATION = re.compile(r"(?<![\w:])\d[\w.]*")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
             "and", "or", "unless", "atan2", "inf", "nan"}


def _without_strings(expr: str) -> str:
    return _STRING.sub('""', expr)


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (recording rule names included)."""
    e = _without_strings(expr)
    e = _SELECTOR.sub(lambda m: m.group(1) or "", e)  # drop label matchers
    e = _GROUPING.sub(" ", e)  # drop by (...), on (...), group_left (...)
    e = re.sub(r"\[[^\]]*\]", " ", e)  # range and subquery brackets
    e = _NUMBER_OR_DURATION.sub(" ", e)
    return {m for m in _IDENT.findall(e) if m.lower() not in _KEYWORDS}


def selector_labels(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name or "", label keys matched) for every ``name{...}`` selector."""
    e = _without_strings(expr)
    return [(m.group(1) or "", set(_MATCHER_KEY.findall(m.group(2)))) for m in _SELECTOR.finditer(e)]


def grouping_labels(expr: str) -> set[str]:
    """Label names in by/without/on/ignoring/group_left/group_right clauses."""
    e = _without_strings(expr)
    return {lab.strip() for m in _GROUPING.finditer(e) for lab in m.group(2).split(",") if lab.strip()}
