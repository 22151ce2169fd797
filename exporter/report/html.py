"""The statement as one self-contained HTML page (pure): the table, the method statement, and
a daily CO2e chart per group as inline SVG (no scripts, fonts or other external assets)."""

from __future__ import annotations

from html import escape

from .model import Row, Statement
from .period import iso
from .render import TITLE, header_lines, method, num, row_title, table

STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#1a202c;max-width:80em}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #cbd5e0;padding:.25em .5em}
td.n{text-align:right;font-variant-numeric:tabular-nums}tr.total td{font-weight:bold}
svg.chart{display:block;margin:.5em 0 1.5em}.op{fill:#2b6cb0}.emb{fill:#a0aec0}dt{font-weight:bold}"""
W, H, LEFT, BOTTOM, TOP = 720, 170, 64, 22, 10


def chart(r: Row) -> str:
    """Bars of one group's CO2e per day, operational below embodied."""
    days = r.daily
    peak = max((op + emb for _, op, emb in days), default=0.0) or 1.0
    unit, scale = ("kg", 1000.0) if peak >= 1000 else ("g", 1.0)
    pw, ph = W - LEFT - 8, H - BOTTOM - TOP
    bw = pw / max(1, len(days))
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" '
             f'aria-label="daily CO2e, {escape(row_title(r, tuple(r.group)))}">',
             f'<line x1="{LEFT}" y1="{TOP + ph}" x2="{LEFT + pw}" y2="{TOP + ph}" stroke="#718096"/>',
             f'<text x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end" font-size="11">{num(peak / scale)} {unit}</text>',
             f'<text x="{LEFT - 4}" y="{TOP + ph}" text-anchor="end" font-size="11">0</text>']
    for i, (t, op, emb) in enumerate(days):
        x = LEFT + i * bw
        h_op, h_emb = ph * op / peak, ph * emb / peak
        tip = f"{iso(t)[:10]}: {num((op + emb) / scale)} {unit} CO2e (operational {num(op / scale)}, embodied {num(emb / scale)})"
        parts.append(f'<g><title>{escape(tip)}</title>'
                     f'<rect class="op" x="{x + 0.5:.2f}" y="{TOP + ph - h_op:.2f}" width="{max(bw - 1, 0.5):.2f}" height="{h_op:.2f}"/>'
                     f'<rect class="emb" x="{x + 0.5:.2f}" y="{TOP + ph - h_op - h_emb:.2f}" width="{max(bw - 1, 0.5):.2f}" height="{h_emb:.2f}"/></g>')
    for i in sorted({0, len(days) // 2, len(days) - 1}) if days else ():
        parts.append(f'<text x="{LEFT + (i + 0.5) * bw:.1f}" y="{H - 6}" text-anchor="middle" font-size="11">'
                     f'{iso(days[i][0])[:10]}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(st: Statement) -> str:
    head, body, total = table(st)
    n = len(st.by)

    def tr(cells: list[str], cls: str = "") -> str:
        tds = "".join(('<td class="n">' if i >= n else "<td>") + escape(c) + "</td>" for i, c in enumerate(cells))
        return (f'<tr class="{cls}">' if cls else "<tr>") + tds + "</tr>"

    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{escape(TITLE)} {escape(iso(st.period.start))} – {escape(iso(st.period.end))}</title>",
           f"<style>{STYLE}</style></head><body>", f"<h1>{escape(TITLE)}</h1>", "<dl>"]
    out += [f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in header_lines(st)]
    out += ["</dl>", "<table><thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    out += [tr(c) for c in body] + [tr(total, "total"), "</tbody></table>"]
    out += [f"<p><em>{escape(note)}</em></p>" for note in st.notes]
    out += ["<h2>Method</h2>", "<dl>"] + [f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in method(st)]
    out += ["</dl>", "<h2>CO2e per day</h2>",
            '<p><svg width="12" height="12"><rect class="op" width="12" height="12"/></svg> operational '
            '<svg width="12" height="12"><rect class="emb" width="12" height="12"/></svg> embodied</p>']
    for r in st.rows:
        out += [f"<h3>{escape(row_title(r, st.by))}</h3>", chart(r)]
    out += ["</body></html>"]
    return "\n".join(out) + "\n"
