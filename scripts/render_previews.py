#!/usr/bin/env python3
"""Render a PNG preview of each generated dashboard from real query results.

    .venv/bin/python scripts/render_previews.py --run        # run the stack, then render
    .venv/bin/python scripts/render_previews.py --data DIR   # render from DIR/queries.json

``--run`` runs tests/integration/test_dashboard_queries.py (a real `wattprint serve` on a
simulated 4-GPU node, fake vLLM/Triton/SGLang servers and a real Prometheus, ~1.5 min) with
WATTPRINT_PREVIEW_DIR set, so every panel query's result is saved, then draws each dashboard with
matplotlib, laid out like Grafana from the panels' grid positions: time series as lines (stacked
where the panel stacks), stats as big numbers, bar gauges as bars, tables as text. Units, legends,
thresholds, value mappings and table columns come from the dashboard JSON. Output:
dashboards/previews/<dashboard>.png (each kept under 400 KB).

This is a preview, not Grafana: fonts, colours and number formatting are close, not identical.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "dashboards"
OUT = DASHBOARDS / "previews"
TEST = "tests/integration/test_dashboard_queries.py"
MAX_BYTES = 400_000
LEGEND_LINE_PT = 8.5  # height of a legend line
LABEL = "Preview drawn with matplotlib by scripts/render_previews.py, not a Grafana render — data from a simulated node"

# Grafana's dark theme, roughly
BG, PANEL, BORDER, TEXT, MUTED = "#111217", "#181b1f", "#2c3235", "#ccccdc", "#8e8e9e"
PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#705da0",
           "#37872d", "#fade2a", "#447ebc", "#c15c17", "#890f02", "#0a437c", "#6d1f62", "#584477"]
NAMED = {"green": "#73bf69", "red": "#f2495c", "orange": "#ff9830", "yellow": "#fade2a", "blue": "#5794f2",
         "purple": "#b877d9", "text": TEXT, "transparent": PANEL}

# --- units (Grafana value formats, the ones the dashboards use) -------------------------------

SI = [(1e-9, "n"), (1e-6, "µ"), (1e-3, "m"), (1, ""), (1e3, "k"), (1e6, "M"), (1e9, "G"), (1e12, "T")]


def _num(v: float, decimals: int | None = None) -> str:
    if decimals is not None:
        return f"{v:.{decimals}f}"
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def _si(v: float, unit: str, decimals: int | None = None) -> str:
    if v == 0 or not math.isfinite(v):
        return f"{_num(v, decimals)} {unit}"
    scale, prefix = next(((s, p) for s, p in reversed(SI) if abs(v) >= s), SI[0])
    return f"{_num(v / scale, decimals)} {prefix}{unit}"


def _duration(v: float) -> str:
    for size, name in ((365.25 * 86400, "year"), (7 * 86400, "week"), (86400, "day"), (3600, "hour"), (60, "min")):
        if abs(v) >= size:
            n = v / size
            return f"{_num(n)} {name}{'s' if name != 'min' and abs(n) >= 2 else ''}"
    return _si(v, "s") if abs(v) < 1 else f"{_num(v)} s"


def fmt(v: float, unit: str, decimals: int | None = None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if unit == "watt":
        return _si(v, "W", decimals)
    if unit == "joule":
        return _si(v, "J", decimals)
    if unit == "massg":
        return _si(v, "g", decimals)
    if unit == "masst":  # Grafana: toFixedUnit('t'), never rescaled
        return f"{_num(v, decimals)} t"
    if unit == "kwatth":  # Grafana: decimalSIPrefix('Wh', 1)
        return _si(v * 1000, "Wh", decimals)
    if unit == "s":
        return _duration(v)
    if unit == "bytes":
        for i, name in enumerate(["B", "KiB", "MiB", "GiB", "TiB"]):
            if abs(v) < 1024 ** (i + 1) or name == "TiB":
                return f"{_num(v / 1024 ** i, decimals)} {name}"
    if unit == "percentunit":
        return f"{_num(100 * v, decimals)}%"
    if unit == "percent":
        return f"{_num(v, decimals)}%"
    if unit == "reqps":
        return f"{_num(v, decimals)} req/s"
    if unit.startswith("si:"):
        return _si(v, unit[3:], decimals)
    if unit.startswith("suffix:"):
        return f"{_num(v, decimals)} {unit[7:]}"
    return _num(v, decimals) if float(v) != int(v) else str(int(v))


# --- data -------------------------------------------------------------------------------------

def legend(fmt_str: str, metric: dict, expr: str) -> str:
    if fmt_str:
        return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt_str).strip()
    labels = {k: v for k, v in metric.items() if k != "__name__"}
    return "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else expr[:60]


def field_unit(panel: dict, name: str, ref: str) -> str:
    """The unit of a series or column: the panel's, or an override by query or by name."""
    unit = panel["fieldConfig"]["defaults"].get("unit", "")
    for o in panel["fieldConfig"].get("overrides", []):
        m = o["matcher"]
        hit = ((m["id"] == "byFrameRefID" and m["options"] == ref) or (m["id"] == "byName" and m["options"] == name)
               or (m["id"] == "byRegexp" and re.fullmatch(m["options"], name)))
        for prop in o["properties"] if hit else []:
            if prop["id"] == "unit":
                unit = prop["value"]
    return unit


def override(panel: dict, name: str, prop_id: str):
    for o in panel["fieldConfig"].get("overrides", []):
        m = o["matcher"]
        if m["id"] == "byRegexp" and re.fullmatch(m["options"], name):
            for prop in o["properties"]:
                if prop["id"] == prop_id:
                    return prop["value"]
    return None


def threshold_color(panel: dict, v: float) -> str:
    steps = panel["fieldConfig"]["defaults"].get("thresholds", {}).get("steps") or [{"value": None, "color": "green"}]
    color = steps[0]["color"]
    for s in steps[1:]:
        if v is not None and v >= s["value"]:
            color = s["color"]
    return NAMED.get(color, color)


def mapped(panel: dict, v: float) -> tuple[str, str] | None:
    for m in panel["fieldConfig"]["defaults"].get("mappings", []) or []:
        key = str(int(v)) if float(v).is_integer() else str(v)
        if m.get("type") == "value" and key in m.get("options", {}):
            r = m["options"][key]
            return r.get("text", key), NAMED.get(r.get("color", "text"), r.get("color", TEXT))
    return None


# --- drawing ----------------------------------------------------------------------------------

class Layout:
    """Grafana's 24-column grid → figure coordinates (fractions), top-left origin."""

    def __init__(self, rows: int, top: float, width_in: float):
        self.rows, self.top = rows, top
        self.unit_w = 1 / 24
        self.height_in = top + rows * width_in / 24 * 0.42
        self.unit_h = (width_in / 24 * 0.42) / self.height_in
        self.top_frac = top / self.height_in

    def rect(self, g: dict, pad: float = 0.003) -> tuple[float, float, float, float]:
        x = g["x"] * self.unit_w + pad
        w = g["w"] * self.unit_w - 2 * pad
        h = g["h"] * self.unit_h - 2 * pad * 0.6
        y = 1 - self.top_frac - (g["y"] + g["h"]) * self.unit_h + pad * 0.6
        return x, y, w, h


def panel_frame(fig, rect, title: str):
    x, y, w, h = rect
    fig.patches.append(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=0.002", zorder=-5,
                                      transform=fig.transFigure, facecolor=PANEL, edgecolor=BORDER, lw=0.8))
    fig.text(x + 0.006, y + h - 0.004, title, color=TEXT, fontsize=8.5, fontweight="bold", va="top", ha="left")


def draw_timeseries(fig, rect, panel, results):
    x, y, w, h = rect
    title_h = min(0.018, h * 0.12)
    series = []
    for t in panel["targets"]:
        r = results.get(t["refId"], {})
        for s in r.get("range", []):
            name = legend(t.get("legendFormat", ""), s["metric"], t["expr"])
            pts = [(float(a), float(b)) for a, b in s["values"] if b not in ("NaN", "+Inf", "-Inf")]
            if pts:
                series.append((name, t["refId"], pts))
    leg_opts = panel.get("options", {}).get("legend", {})
    as_table = leg_opts.get("displayMode") == "table"
    if as_table and leg_opts.get("sortBy") == "Mean":  # Grafana sorts the legend table's rows
        series.sort(key=lambda s: sum(v for _, v in s[2]) / len(s[2]), reverse=bool(leg_opts.get("sortDesc")))
    n_leg = len(series) + (1 if as_table and series else 0)  # a table legend has a header row
    cols = 1 if as_table else max(1, min(4, int(w * 24 / 4)))
    step = LEGEND_LINE_PT / (fig.get_size_inches()[1] * 72)  # one legend line, in figure fractions
    legend_h = min(h * (0.42 if as_table else 0.35), (math.ceil(n_leg / cols)) * step + 0.004) if n_leg else 0
    fw = fig.get_size_inches()[0]
    left, right = 0.72 / fw, (0.62 if any(field_unit(panel, n, r) != panel["fieldConfig"]["defaults"].get("unit")
                                          for n, r, _ in series) else 0.15) / fw
    ax = fig.add_axes((x + left, y + legend_h + 0.012, w - left - right, h - title_h - legend_h - 0.022))
    ax.set_facecolor(PANEL)
    for sp in ax.spines.values():
        sp.set_visible(False)
    ax.tick_params(colors=MUTED, labelsize=6.5, length=0)
    ax.grid(True, color=BORDER, lw=0.5)
    custom = panel["fieldConfig"]["defaults"].get("custom", {})
    stacked = (custom.get("stacking") or {}).get("mode") == "normal"
    unit = panel["fieldConfig"]["defaults"].get("unit", "")
    units = {field_unit(panel, n, ref) for n, ref, _ in series}
    second = sorted(u for u in units if u != unit)
    ax2 = ax.twinx() if second else None
    if ax2 is not None:
        ax2.tick_params(colors=MUTED, labelsize=6.5, length=0)
        for sp in ax2.spines.values():
            sp.set_visible(False)
    base: dict[float, float] = {}
    handles = []
    for i, (name, ref, pts) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        ts = [t / 86400 for t, _ in pts]  # matplotlib dates: days since 1970 (UTC)
        vals = [v for _, v in pts]
        target = ax2 if (ax2 is not None and field_unit(panel, name, ref) != unit) else ax
        dashed = override(panel, name, "custom.lineStyle")
        own_stack = override(panel, name, "custom.stacking")
        if stacked and not own_stack and target is ax:
            lows = [base.get(t, 0.0) for t, _ in pts]
            highs = [lo + v for lo, v in zip(lows, vals)]
            for t, hi in zip((t for t, _ in pts), highs):
                base[t] = hi
            ax.fill_between(ts, lows, highs, color=color, alpha=0.35, lw=0)
            line, = ax.plot(ts, highs, color=color, lw=1)
        else:
            line, = target.plot(ts, vals, color=color, lw=1.1, ls=(0, (4, 3)) if dashed else "-")
            if not dashed and custom.get("fillOpacity", 0) and target is ax:
                target.fill_between(ts, vals, color=color, alpha=custom["fillOpacity"] / 100, lw=0)
        handles.append((line, name))
    if panel["fieldConfig"]["defaults"].get("min") == 0:
        ax.set_ylim(bottom=0)
    if "max" in panel["fieldConfig"]["defaults"] and not stacked:
        top = panel["fieldConfig"]["defaults"]["max"]
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, min(hi, top) if hi > 0 else top)
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: fmt(v, unit)))
    ax.yaxis.set_major_locator(plt.MaxNLocator(4))
    if ax2 is not None:
        ax2.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: fmt(v, second[0])))
        ax2.yaxis.set_major_locator(plt.MaxNLocator(4))
        ax2.set_ylim(bottom=0)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.xaxis.set_major_locator(plt.MaxNLocator(4))
    if not series:
        ax.text(0.5, 0.5, "No data", color=MUTED, ha="center", va="center", transform=ax.transAxes)
    # legend as text rows under the plot; a table legend: name, mean, last (Grafana's "Last *")
    if as_table and handles:
        fig.text(x + w - 0.095, y + legend_h - 0.004, "Mean", color=MUTED, fontsize=6.3, va="top", ha="right")
        fig.text(x + w - 0.01, y + legend_h - 0.004, "Last *", color=MUTED, fontsize=6.3, va="top", ha="right")
    for i, (line, name) in enumerate(handles):
        if as_table:
            row = i + 1
            ly = y + legend_h - 0.004 - row * step
            if ly < y + 0.002:
                break
            _, ref, pts = series[i]
            u = field_unit(panel, name, ref)
            fig.text(x + 0.008, ly, "▬", color=line.get_color(), fontsize=6.5, va="top")
            chars = int((w - 0.2) * fw * 72 / (6.3 * 0.56))
            fig.text(x + 0.017, ly, clip(name, chars), color=MUTED, fontsize=6.3, va="top")
            fig.text(x + w - 0.095, ly, fmt(sum(v for _, v in pts) / len(pts), u), color=TEXT, fontsize=6.3,
                     va="top", ha="right")
            fig.text(x + w - 0.01, ly, fmt(pts[-1][1], u), color=TEXT, fontsize=6.3, va="top", ha="right")
            continue
        col, row = i % cols, i // cols
        lx = x + 0.008 + col * (w - 0.01) / cols
        ly = y + legend_h - 0.004 - row * step
        if ly < y + 0.002:
            break
        fig.text(lx, ly, "▬", color=line.get_color(), fontsize=6.5, va="top")
        chars = int(((w - 0.01) / cols - 0.012) * fw * 72 / (6.3 * 0.56))
        fig.text(lx + 0.009, ly, clip(name, chars), color=MUTED, fontsize=6.3, va="top")


def clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: max(1, chars - 1)] + "…"


def draw_stat(fig, rect, panel, results):
    x, y, w, h = rect
    t = panel["targets"][0]
    r = results.get(t["refId"], {})
    res = r.get("result") or []
    unit = panel["fieldConfig"]["defaults"].get("unit", "")
    decimals = panel["fieldConfig"]["defaults"].get("decimals")
    background = panel["options"].get("colorMode") == "background"
    if not res:
        fig.text(x + w / 2, y + h * 0.42, "No data", color=MUTED, fontsize=12, ha="center", va="center")
        return
    items = [(legend(t.get("legendFormat", ""), s["metric"], "") if len(res) > 1 or t.get("legendFormat") else "",
              float(s["value"][1])) for s in res]
    n = len(items)
    cols = n if n <= 4 else math.ceil(n / 2)
    rows = math.ceil(n / cols)
    cw, ch = (w - 0.01) / cols, (h - 0.024) / rows
    for i, (name, v) in enumerate(items):
        cx = x + 0.005 + (i % cols) * cw
        cy = y + 0.004 + (rows - 1 - i // cols) * ch
        m = mapped(panel, v)
        text, color = m if m else (fmt(v, unit, decimals), threshold_color(panel, v))
        if background:
            fig.patches.append(FancyBboxPatch((cx + 0.002, cy + 0.002), cw - 0.004, ch - 0.004,
                                              boxstyle="round,pad=0,rounding_size=0.002", transform=fig.transFigure,
                                              facecolor=color, edgecolor="none", alpha=0.85, zorder=-4))
            color = "#ffffff"
        fw, fh = fig.get_size_inches()
        size = max(9.0, min(30.0, ch * fh * 72 * 0.42, cw * fw * 72 / (0.62 * max(3, len(text)))))
        fig.text(cx + cw / 2, cy + ch * (0.42 if name else 0.5), text, color=color, fontsize=size,
                 ha="center", va="center", fontweight="bold")
        if name:
            fig.text(cx + cw / 2, cy + ch * 0.86, clip(name, int((cw - 0.004) * fw * 72 / (6.5 * 0.56))),
                     color="#ffffff" if background else MUTED, fontsize=6.5, ha="center", va="center")


def draw_bargauge(fig, rect, panel, results):
    x, y, w, h = rect
    t = panel["targets"][0]
    res = results.get(t["refId"], {}).get("result") or []
    unit = panel["fieldConfig"]["defaults"].get("unit", "")
    items = sorted(((legend(t.get("legendFormat", ""), s["metric"], t["expr"]), float(s["value"][1])) for s in res),
                   key=lambda kv: -kv[1])[:10]
    if not items:
        fig.text(x + w / 2, y + h * 0.45, "No data", color=MUTED, fontsize=12, ha="center", va="center")
        return
    top = panel["fieldConfig"]["defaults"].get("max") or max(v for _, v in items) or 1
    mode = panel["fieldConfig"]["defaults"].get("color", {}).get("mode", "")
    cmap = plt.get_cmap({"continuous-GrYlRd": "RdYlGn_r", "continuous-BlPu": "BuPu"}.get(mode, "viridis"))
    area_h = h - 0.026
    bh = min(0.026, area_h / len(items))
    for i, (name, v) in enumerate(items):
        by = y + h - 0.024 - (i + 1) * bh
        fig.text(x + 0.007, by + bh * 0.72, clip(name, int((w - 0.06) * fig.get_size_inches()[0] * 72 / 3.7)),
                 color=TEXT, fontsize=6.5, va="center")
        bx, bw = x + 0.007, (w - 0.06) * max(0.0, min(1.0, v / top))
        frac = max(0.0, min(1.0, v / top))
        color = threshold_color(panel, v) if "thresholds" in panel["fieldConfig"]["defaults"] else cmap(0.3 + 0.45 * frac)
        fig.patches.append(plt.Rectangle((bx, by + bh * 0.08), w - 0.06, bh * 0.4, transform=fig.transFigure,
                                         facecolor="#22252b", edgecolor="none"))
        fig.patches.append(plt.Rectangle((bx, by + bh * 0.08), bw, bh * 0.4, transform=fig.transFigure,
                                         facecolor=color, edgecolor="none"))
        fig.text(x + w - 0.005, by + bh * 0.28, fmt(v, unit), color=color, fontsize=7, ha="right", va="center",
                 fontweight="bold")


def table_rows(panel, results) -> tuple[list[str], list[list[str]]]:
    """Emulate Grafana's merge + organize transformations (and sortBy) on instant results."""
    targets = panel["targets"]
    single = len(targets) == 1
    org = next((t["options"] for t in panel.get("transformations", []) if t["id"] == "organize"), {})
    order = sorted(org.get("indexByName", {}), key=lambda k: org["indexByName"][k])
    rename = org.get("renameByName", {})
    merged: list[dict] = []  # merge: a row joins one that agrees on every label both have
    for t in targets:
        vcol = "Value" if single else f"Value #{t['refId']}"
        for s in results.get(t["refId"], {}).get("result") or []:
            labels = {k: v for k, v in s["metric"].items() if k != "__name__"}
            row = next((r for r in merged if vcol not in r
                        and all(r[k] == v for k, v in labels.items() if k in r)), None)
            if row is None:
                merged.append(row := {})
            row.update(labels)
            row[vcol] = float(s["value"][1])
    header = [rename.get(c, c) for c in order]
    sort = (panel["options"].get("sortBy") or [{}])[0]
    if sort.get("displayName") in header:
        col = order[header.index(sort["displayName"])]
        merged.sort(key=lambda r: r.get(col, float("-inf")), reverse=bool(sort.get("desc")))
    out = []
    for row in merged:
        cells = []
        for c in order:
            v = row.get(c, "")
            if isinstance(v, float):
                v = fmt(v, field_unit(panel, rename.get(c, c), c.rsplit("#", 1)[-1].strip() if "#" in c else "A"))
            cells.append(str(v))
        out.append(cells)
    return header, out


def draw_table(fig, rect, panel, results):
    x, y, w, h = rect
    header, rows = table_rows(panel, results)
    if not rows:
        fig.text(x + w / 2, y + h * 0.45, "No data", color=MUTED, fontsize=12, ha="center", va="center")
        return
    fs = 6.6
    fw, fh = fig.get_size_inches()
    line_h = fs * 1.55 / 72 / fh
    room = int((w - 0.016) * fw * 72 / (fs * 0.6))  # characters across the panel
    widths = [max(len(hd), *(len(r[i]) for r in rows)) + 2 for i, hd in enumerate(header)]
    while sum(widths) > room and max(widths) > 8:  # shrink the widest column first
        widths[widths.index(max(widths))] -= 1
    total = max(sum(widths), room * 0.6)
    cx = [x + 0.008 + (w - 0.016) * sum(widths[:i]) / total for i in range(len(header))]
    ty = y + h - 0.026
    for i, hd in enumerate(header):
        fig.text(cx[i], ty, hd, color="#6e9fff", fontsize=fs, fontweight="bold", va="top")
    fig.lines.append(plt.Line2D([x + 0.006, x + w - 0.006], [ty - line_h * 0.95] * 2, transform=fig.transFigure,
                                color=BORDER, lw=0.6))
    for k, r in enumerate(rows):
        ry = ty - (k + 1.2) * line_h
        if ry - line_h < y:
            fig.text(x + 0.008, ry, f"… {len(rows) - k} more", color=MUTED, fontsize=fs, va="top")
            break
        for i, cell in enumerate(r):
            fig.text(cx[i], ry, clip(cell, widths[i] - 1), color=TEXT, fontsize=fs, va="top")


def render(board_path: Path, data: dict, out: Path) -> Path:
    board = json.loads(board_path.read_text())
    by_panel: dict[int, dict[str, dict]] = {}
    for r in data["results"]:
        if r["file"] == board_path.name:
            by_panel.setdefault(r["panel_id"], {})[r["ref"]] = r
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in board["panels"])
    width_in = 18.0
    layout = Layout(rows, top=0.95, width_in=width_in)
    fig = plt.figure(figsize=(width_in, layout.height_in), facecolor=BG)
    top = layout.top_frac
    fig.text(0.005, 1 - 0.22 * top, board["title"], color=TEXT, fontsize=15, fontweight="bold", va="top")
    fig.text(0.995, 1 - 0.22 * top, LABEL, color="#ff9830", fontsize=13, fontweight="bold", va="top", ha="right")
    when = time.strftime("%Y-%m-%d", time.gmtime(data["end"]))
    vars_line = "   ".join(f"{v.get('label', v['name'])}: {'Prometheus' if v['type'] == 'datasource' else 'All' if v['type'] == 'query' else v['current']['text']}"
                           for v in board["templating"]["list"])
    fig.text(0.005, 1 - 0.62 * top, f"{vars_line}      time range: last {data['run_seconds']} s ({when})",
             color=MUTED, fontsize=8.5, va="top")
    fig.text(0.995, 1 - 0.62 * top, "4 simulated H100s, fake vLLM / Triton / SGLang servers, a real wattprint serve "
             f"and Prometheus · {data['summary']}", color=MUTED, fontsize=8, va="top", ha="right")
    for p in board["panels"]:
        rect = layout.rect(p["gridPos"])
        if p["type"] == "row":
            x, y, w, h = rect
            fig.text(x + 0.002, y + h / 2, p["title"], color=TEXT, fontsize=10.5, fontweight="bold", va="center")
            continue
        panel_frame(fig, rect, p["title"])
        results = by_panel.get(p["id"], {})
        {"timeseries": lambda: draw_timeseries(fig, rect, p, results),
         "stat": lambda: draw_stat(fig, rect, p, results),
         "bargauge": lambda: draw_bargauge(fig, rect, p, results),
         "table": lambda: draw_table(fig, rect, p, results)}[p["type"]]()
    path = out / (board_path.stem + ".png")
    for dpi in (100, 90, 80, 70, 60):
        fig.savefig(path, dpi=dpi, facecolor=BG)
        if path.stat().st_size < MAX_BYTES:
            break
    plt.close(fig)
    try:  # palette PNG: a fraction of the size, same look
        from PIL import Image

        img = Image.open(path).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
        img.save(path, optimize=True)
    except ImportError:
        pass
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="store_true", help=f"run {TEST} to collect the data first (~1.5 min)")
    ap.add_argument("--data", type=Path, help="a folder holding queries.json from an earlier run")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if args.run == bool(args.data):
        ap.error("give --run or --data DIR")
    data_dir = args.data
    if args.run:
        data_dir = Path(tempfile.mkdtemp(prefix="wattprint-previews-"))
        env = {**os.environ, "WATTPRINT_PREVIEW_DIR": str(data_dir)}
        rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", TEST],
                             cwd=ROOT, env=env)
        if rc != 0 and not (data_dir / "queries.json").exists():
            return rc
    data = json.loads((data_dir / "queries.json").read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    for board in sorted(DASHBOARDS.glob("*.json")):
        path = render(board, data, args.out)
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} "
              f"({path.stat().st_size // 1000} KB)")
    print(data["summary"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
