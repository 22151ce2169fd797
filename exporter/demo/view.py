"""The demo's terminal view: the exporter's ``/metrics`` read back, as the per-endpoint table of
:mod:`exporter.endpoint_table` (the same rows as the landing page), drawn with ``rich``."""

from __future__ import annotations

import urllib.request
from typing import Any

from .. import catalogue, endpoint_table

PREFIX = "wattprint_"


def parse(text: str) -> dict[str, dict[tuple[str, ...], float]]:
    """The table's families from an exposition, in the snapshot's shape (catalogue short name →
    {label values in the catalogue's order: value}), read with prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {PREFIX + name: (name, catalogue.get(name).labels) for name in endpoint_table.FAMILIES}
    out: dict[str, dict[tuple[str, ...], float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            hit = wanted.get(s.name)
            if hit is not None:
                name, labels = hit
                out.setdefault(name, {})[tuple(s.labels.get(k, "") for k in labels)] = s.value
    return out


def scrape(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def table(rows: list[endpoint_table.Row], title: str, caption: str = "") -> Any:
    """A rich Table of the rows (catch-all endpoints dimmed)."""
    from rich.table import Table
    from rich.text import Text

    t = Table(title=title, caption=caption, title_justify="left", caption_justify="left", expand=False)
    for i, head in enumerate(endpoint_table.HEADERS):
        t.add_column(head, justify="left" if i in (0, 1, 8) else "right", no_wrap=i < 2, overflow="fold")
    for row in rows:
        # Text, not markup: a model called "[link=…]" is shown as it is
        t.add_row(*(Text(c) for c in endpoint_table.cells(row)),
                  style="dim" if row.endpoint in endpoint_table.CATCH_ALL else None)
    return t


def width_needed(rows: list[endpoint_table.Row]) -> int:
    """The table's width with every cell on one line: each column its widest cell or heading, and
    the borders (a box line and two spaces of padding a column, one line to close)."""
    from rich.cells import cell_len

    cols = [endpoint_table.HEADERS, *(endpoint_table.cells(r) for r in rows)]
    return sum(max(cell_len(c[i]) for c in cols) + 3 for i in range(len(endpoint_table.HEADERS))) + 1


def records(rows: list[endpoint_table.Row], title: str, caption: str = "", width: int = 80) -> Any:
    """The rows for a terminal too narrow for the table: one block an endpoint, its ``header
    value`` pairs on indented lines of at most ``width``, a pair never split (Text, not markup,
    as in :func:`table`)."""
    from rich.cells import cell_len
    from rich.console import Group
    from rich.markup import render
    from rich.text import Text

    parts: list[Any] = [render(title)]
    for row in rows:
        c = endpoint_table.cells(row)
        head = Text(f"{c[0]} · {c[1]}", style="bold" if row.endpoint not in endpoint_table.CATCH_ALL else "dim")
        lines: list[str] = []
        for pair in (f"{h} {v}" for h, v in zip(endpoint_table.HEADERS[2:], c[2:])):
            if lines and cell_len(lines[-1] + " · " + pair) <= width:
                lines[-1] += " · " + pair
            else:
                lines.append("  " + pair)
        parts += [head, *(Text(line) for line in lines)]
    if caption:
        parts.append(Text(caption, style="dim"))
    return Group(*parts)


def render(rows: list[endpoint_table.Row], title: str, caption: str, console: Any) -> Any:
    """The table, or the records where the console is too narrow for it."""
    if width_needed(rows) <= console.width:
        return table(rows, title, caption)
    return records(rows, title, caption, console.width)
