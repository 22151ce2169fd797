"""The statement as Markdown, CSV or JSON (pure); the table and the method statement are
shared with the HTML page (exporter.report.html)."""

from __future__ import annotations

import csv
import io
import json
import math

from .model import ALLOWED_BY, CATCH_ALL, FIGURE_KEYS, Figures, Row, Statement, figures_dict
from .period import iso

TITLE = "Wattprint emissions statement"
DAGGER = " †"


def num(x: float | None, sig: int = 3) -> str:
    """At least ``sig`` significant digits, thousands separated; "—" for no figure."""
    if x is None:
        return "—"
    if x == 0:
        return "0"
    decimals = max(0, sig - 1 - math.floor(math.log10(abs(x))))
    return f"{x:,.{decimals}f}"


def pct(x: float | None) -> str:
    return "—" if x is None else f"{num(100 * x)} %"


def label(value: str | None) -> str:
    return "(none)" if not value else value


# the table's figure columns: header, cell of a Figures (and of a row's training share)
COLUMNS = (
    ("energy kWh", lambda f: num(f.energy_joules / 3.6e6)),
    ("idle", lambda f: pct(f.idle_share)),
    ("CO2e kg", lambda f: num(f.co2e_grams / 1000)),
    ("operational kg", lambda f: num(f.co2e_operational_grams / 1000)),
    ("embodied kg", lambda f: num(f.co2e_embodied_grams / 1000)),
    ("requests", lambda f: num(f.requests, 1) if f.requests >= 1 else num(f.requests)),
    ("generation tokens", lambda f: num(f.generation_tokens, 1) if f.generation_tokens >= 1 else num(f.generation_tokens)),
    ("g/request", lambda f: num(f.grams_per_request)),
    ("g/1k tokens", lambda f: num(f.grams_per_1k_generation_tokens)),
)


def table(st: Statement) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, one list of cells per row, the totals' cells)."""
    header = list(st.by) + [h for h, _ in COLUMNS] + ["training share"]

    def cells(group: list[str], f: Figures, share: str) -> list[str]:
        return group + [cell(f) for _, cell in COLUMNS] + [share]

    body = [cells([label(r.group[k]) + (DAGGER if k == "endpoint" and r.catch_all else "") for k in st.by],
                  r.figures, pct(r.training_share)) for r in st.rows]
    total = cells(["total"] + [""] * (len(st.by) - 1), st.totals, "")
    return header, body, total


def _where(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _factor_ranges(items: list[tuple[dict[str, str], float, float]], fmt) -> str:
    """Each value (or min–max) once, with the label sets it was seen with."""
    if not items:
        return "not exposed in the period"
    seen: dict[str, list[str]] = {}
    for labels, lo, hi in items:
        value = fmt(lo) if math.isclose(lo, hi) else f"{fmt(lo)}–{fmt(hi)}"
        seen.setdefault(value, []).append(_where(labels))
    return "; ".join(f"{v} ({'; '.join(w)})" if any(w) else v for v, w in seen.items())


CARBON_ORDER = ("region", "provider", "zone", "source", "how")


def _carbon(c: dict[str, str]) -> str:
    rest = ", ".join(f"{k}={c[k]}" for k in CARBON_ORDER if k in c)
    return f"cluster={c['cluster']}: {rest}" if c.get("cluster") else rest


def method(st: Statement) -> list[tuple[str, str]]:
    """The method statement: (what, how), in the spirit of an SCI statement (ISO/IEC 21031)."""
    fx = st.factors
    carbon = "; ".join(_carbon(c) for c in fx.carbon) or "not exposed in the period"
    src = ("rollups: hourly points of the recording rules wattprint:*:increase1h (each the increase "
           "over the hour before it), summed over the period, so its edges are exact to within an hour"
           if st.source == "rollups" else
           "raw counters: increase() over the period, which handles counter resets and extrapolates "
           "to the period's edges (a series born in the period loses what it counted before its first "
           "scrape)")
    return [
        ("Operational CO2e", "location-based and attributional: each exporter integrates sample by sample "
         "ΔCO2e = ΔE / 3.6e6 × PUE × I(t), with I(t) the grid's average intensity at that moment "
         "(gCO2e/kWh); marginal signals never enter it."),
        ("Intensity source", carbon),
        ("PUE", _factor_ranges(fx.pue, lambda v: f"{v:g}")),
        ("Embodied CO2e", "manufacturing emissions amortised over each GPU-second of residency: "
         + _factor_ranges(fx.embodied, lambda v: f"{num(v * 1000)} mg/GPU-s")),
        ("Functional units", "SCI = (O + M) / R (ISO/IEC 21031:2024) with O operational and M embodied "
         "CO2e, and R one successful request (g/request) or 1,000 generation tokens (g/1k tokens). "
         "Idle energy of reserved GPUs is included: a quiet endpoint's per-request figure is high."),
        ("Idle share", "the group's energy booked as idle (reserved but unused GPUs, idle CPU) over its energy."),
        ("Training share", "the period's inference CO2e over the model's configured training footprint "
         "(wattprint_model_training_co2e_grams); — where none is configured or --by has no model."),
        ("Catch-all rows †", f"{', '.join(CATCH_ALL)}: energy no endpoint can be charged with (GPUs without "
         "a process, CPU of no endpoint, series past the cardinality cap); "
         + ("left out (--exclude-catch-all)." if st.exclude_catch_all else
            "in the totals, without requests; --exclude-catch-all leaves them out.")),
        ("Data", f"{src}. Prometheus: {st.url}."),
    ]


def header_lines(st: Statement) -> list[tuple[str, str]]:
    return [("Period", st.period.describe()), ("Grouped by", ", ".join(st.by)),
            ("Source", st.source_detail or st.source), ("Prometheus", st.url)]


def md_cell(text: str) -> str:
    """A table cell that cannot break the table (label values are anyone's text)."""
    return " ".join(text.replace("\\", "\\\\").replace("|", "\\|").split())


def markdown(st: Statement) -> str:
    head, body, total = table(st)
    body = [[md_cell(c) for c in cells] for cells in body]
    out = [f"# {TITLE}", ""]
    out += [f"- **{k}:** {v}" for k, v in header_lines(st)]
    out += ["", "| " + " | ".join(head) + " |", "|" + "|".join("---" if i < len(st.by) else "---:"
                                                              for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(c) + " |" for c in body]
    out += ["| " + " | ".join(f"**{c}**" if c else "" for c in total) + " |", ""]
    out += [f"> {n}" for n in st.notes] + ([""] if st.notes else [])
    out += ["## Method", ""] + [f"- **{k}:** {v}" for k, v in method(st)]
    return "\n".join(out) + "\n"


def as_json(st: Statement) -> dict[str, object]:
    return {
        "title": TITLE,
        "from": iso(st.period.start), "to": iso(st.period.end), "period_seconds": st.period.seconds,
        "prometheus_url": st.url, "by": list(st.by), "source": st.source, "source_detail": st.source_detail,
        "exclude_catch_all": st.exclude_catch_all,
        "rows": [r.as_dict() for r in st.rows],
        "totals": figures_dict(st.totals),
        "factors": {"carbon": st.factors.carbon,
                    "pue": [{**labels, "min": lo, "max": hi} for labels, lo, hi in st.factors.pue],
                    "embodied_grams_per_gpu_second": [{**labels, "min": lo, "max": hi}
                                                      for labels, lo, hi in st.factors.embodied]},
        "method": dict(method(st)),
        "notes": st.notes,
    }


def render_json(st: Statement) -> str:
    return json.dumps(as_json(st), indent=2, ensure_ascii=False) + "\n"


def csv_fields(st: Statement) -> list[str]:
    labels = [k for k in ALLOWED_BY if k in st.by or k in ("cluster", "namespace", "endpoint", "model")]
    return ["row"] + labels + ["catch_all"] + list(FIGURE_KEYS) + ["training_co2e_grams", "training_share"]


def csv_value(v: object) -> object:
    return "" if v is None else str(v).lower() if isinstance(v, bool) else v


def render_csv(st: Statement) -> str:
    """One line per group (``row=group``), then the totals (``row=total``); SI units (J, g),
    empty cells where there is no figure or label."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=csv_fields(st), lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    rows: list[tuple[str, dict[str, object]]] = [("group", r.as_dict()) for r in st.rows]
    rows.append(("total", figures_dict(st.totals)))
    for kind, d in rows:
        w.writerow({"row": kind, **{k: csv_value(v) for k, v in d.items()}})
    return buf.getvalue()


def row_title(r: Row, by: tuple[str, ...]) -> str:
    return " / ".join(f"{k}={label(r.group[k])}" for k in by)
