"""The Prometheus recording and alerting rules, for code that needs them.

The rules live in one plain YAML file, ``rules/wattprint.rules.yaml`` at the top of the source
tree: ``promtool`` checks and unit-tests it (``rules/tests/``), the Helm chart embeds it verbatim
in its PrometheusRule, and this module reads it (tests, dashboards, docs). It is not shipped in
the wheel; :func:`path` says so clearly when the source tree is not there.

Alert annotations carry ``runbook_url: docs/runbook.md#<anchor>``, relative to the repository;
``load(runbook_url=...)`` rewrites that prefix to wherever the runbook is published.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

RULES_FILE = "wattprint.rules.yaml"
RUNBOOK = "docs/runbook.md"
_ENV = "WATTPRINT_RULES_FILE"


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
    ``runbook_url`` annotation points there instead of the repository-relative path."""
    doc = yaml.safe_load(path().read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list):
        raise ValueError(f"{path()}: expected a mapping with a 'groups' list")
    if runbook_url:
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
