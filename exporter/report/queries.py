"""What the report asks Prometheus: the PromQL (pure builders), which source answers it (the
hourly rollups or the raw counters), and the gathering of one statement."""

from __future__ import annotations

from dataclasses import dataclass

from .model import CATCH_ALL, SOURCES, Factors, Row, Statement, fold
from .period import DAY, OptionError, Period, iso, promql_duration
from .prom import Client, PrometheusError


class ReportError(RuntimeError):
    """No statement can be made: nothing to report, or a source that cannot answer."""


@dataclass(frozen=True)
class Counter:
    what: str  # the Figures.book key
    raw: str
    rollup: str
    split: str | None  # the label that splits it (mode, scope, kind)


COUNTERS = (
    Counter("energy", "wattprint_endpoint_energy_joules_total", "wattprint:endpoint_energy_joules:increase1h", "mode"),
    Counter("co2e", "wattprint_endpoint_co2e_grams_total", "wattprint:endpoint_co2e_grams:increase1h", "scope"),
    Counter("requests", "wattprint_endpoint_requests_total", "wattprint:endpoint_requests:increase1h", None),
    Counter("tokens", "wattprint_endpoint_tokens_total", "wattprint:endpoint_tokens:increase1h", "kind"),
)
ENERGY, CO2E = COUNTERS[0], COUNTERS[1]
ROLLUP_COVERAGE = 0.9  # share of the period's hours the rollups must hold, in every cluster
MIN_ROLLUP_PERIOD = 2 * 3600.0


def selector(name: str, exclude_catch_all: bool) -> str:
    if exclude_catch_all:
        return f'{name}{{endpoint!~"{"|".join(CATCH_ALL)}"}}'
    return name


def increase_expr(c: Counter, source: str, by: tuple[str, ...], window: str, exclude_catch_all: bool) -> str:
    """What the counter grew by over ``window`` before the evaluation time, summed by ``by`` (and
    the counter's split label): the rollups' hourly points summed, or increase() of the raw
    counter (which handles resets and extrapolates to the window's edges)."""
    labels = ", ".join(list(by) + ([c.split] if c.split else []))
    if source == "rollups":
        # Prometheus 2.x ranges hold both ends: a rollup point stamped exactly at the start covers
        # the hour before it, so the range stops 1 ms short of it
        if window.endswith("ms") and window[:-2].isdigit() and int(window[:-2]) > 1:
            window = f"{int(window[:-2]) - 1}ms"
        inner = f"sum_over_time({selector(c.rollup, exclude_catch_all)}[{window}])"
    else:
        inner = f"increase({selector(c.raw, exclude_catch_all)}[{window}])"
    return f"sum by ({labels}) ({inner})"


def gauge_step(period: Period) -> str:
    """The subquery step the gauges (factors) are sampled at: hourly, finer for short periods."""
    return f"{int(max(60.0, min(3600.0, period.seconds / 24)))}s"


def factor_queries(period: Period) -> dict[str, str]:
    rng = f"{period.range}:{gauge_step(period)}"
    out = {"carbon": "max_over_time((group by (cluster, region, provider, zone, source, how) "
                     f"(wattprint_carbon_info))[{rng}])",
           "training": f"max by (model) (max_over_time(wattprint_model_training_co2e_grams[{rng}]))"}
    for name, metric, by in (("pue", "wattprint_pue_ratio", "cluster, source"),
                             ("embodied", "wattprint_embodied_grams_per_gpu_second", "cluster")):
        out[f"{name}_min"] = f"min by ({by}) (min_over_time({metric}[{rng}]))"
        out[f"{name}_max"] = f"max by ({by}) (max_over_time({metric}[{rng}]))"
    return out


def _ranges(client: Client, queries: dict[str, str], at: float, name: str) -> list[tuple[dict[str, str], float, float]]:
    lo = {frozenset(s.labels.items()): s.value for s in client.query(queries[f"{name}_min"], at)}
    hi = {frozenset(s.labels.items()): s.value for s in client.query(queries[f"{name}_max"], at)}
    return sorted(((dict(k), lo.get(k, v), v) for k, v in hi.items()), key=lambda x: sorted(x[0].items()))


def factors(client: Client, period: Period) -> tuple[Factors, dict[str, float]]:
    q = factor_queries(period)
    carbon = sorted((s.labels for s in client.query(q["carbon"], period.end)), key=lambda d: sorted(d.items()))
    training = {s.labels.get("model", ""): s.value for s in client.query(q["training"], period.end)}
    return Factors(carbon, _ranges(client, q, period.end, "pue"), _ranges(client, q, period.end, "embodied")), training


def choose_source(client: Client, period: Period, requested: str, by: tuple[str, ...]) -> tuple[str, str]:
    """(source, why). ``auto``: the rollups when they hold at least 90 % of the period's hours in
    every cluster that has them or reports raw counters at the period's end; else raw."""
    if "instance" in by:
        if requested == "rollups":
            raise OptionError("--by=instance needs the raw counters: the rollups are summed over instances")
        return "raw", "raw counters (the rollups carry no instance label)"
    if requested != "auto":
        return requested, f"{requested} (--source={requested})"
    if period.seconds < MIN_ROLLUP_PERIOD:
        return "raw", "raw counters (the period is shorter than 2 h; rollup points are hourly)"
    hours = period.seconds / 3600.0
    held = {s.labels.get("cluster", ""): s.value for s in
            client.query(f"max by (cluster) (count_over_time({ENERGY.rollup}[{period.range}]))", period.end)}
    if not held:
        return "raw", f"raw counters (no {ENERGY.rollup} series in the period)"
    live = {s.labels.get("cluster", "") for s in client.query(f"group by (cluster) ({ENERGY.raw})", period.end)}
    short = {c: held.get(c, 0.0) for c in sorted(live | set(held)) if held.get(c, 0.0) < ROLLUP_COVERAGE * hours}
    if short:
        c, n = next(iter(short.items()))
        return "raw", (f"raw counters (the rollups hold {n:.0f} of the period's {hours:.0f} hours"
                       f"{f' in cluster {c}' if c else ''})")
    return "rollups", "rollups (wattprint:*:increase1h, hourly increases summed)"


def totals(client: Client, period: Period, by: tuple[str, ...], source: str,
           exclude_catch_all: bool) -> dict[tuple[str, str], list[tuple[dict[str, str], float]]]:
    return {(c.what, c.split or ""): [(s.labels, s.value) for s in client.query(
        increase_expr(c, source, by, period.range, exclude_catch_all), period.end)] for c in COUNTERS}


def _key(labels: dict[str, str], by: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(labels.get(k, "") for k in by)


def daily(client: Client, period: Period, by: tuple[str, ...], source: str, exclude_catch_all: bool,
          rows: list[Row]) -> None:
    """Each row's CO2e day by day from the period's start (``Row.daily``): one query_range over
    the whole days, one instant query for a shorter last day."""
    days = period.days()
    per: dict[tuple[str, ...], dict[float, list[float]]] = {}

    def book(labels: dict[str, str], day_start: float, value: float) -> None:
        slot = per.setdefault(_key(labels, by), {}).setdefault(day_start, [0.0, 0.0])
        slot[0 if labels.get("scope") == "operational" else 1] += value

    whole = [d for d in days if d[1] - d[0] >= DAY - 1e-6]
    if whole:
        expr = increase_expr(CO2E, source, by, promql_duration(DAY), exclude_catch_all)
        for s in client.query_range(expr, whole[0][1], whole[-1][1], DAY):
            for t, v in s.points:
                book(s.labels, t - DAY, v)
    if len(whole) < len(days):
        start, end = days[-1]
        expr = increase_expr(CO2E, source, by, promql_duration(end - start), exclude_catch_all)
        for s in client.query(expr, end):
            book(s.labels, start, s.value)
    for row in rows:
        got = per.get(_key(row.group, by), {})
        row.daily = [(d0, *got.get(d0, (0.0, 0.0))) for d0, _ in days]


WATTPRINT_NAMES = tuple(c.raw for c in COUNTERS) + tuple(c.rollup for c in COUNTERS)


def nothing_found(client: Client, period: Period, exclude_catch_all: bool) -> ReportError:
    names = set(client.metric_names())
    if not names & set(WATTPRINT_NAMES):
        return ReportError(f"Prometheus at {client.url} has no wattprint metrics (neither "
                           f"{ENERGY.raw} nor {ENERGY.rollup}): is it scraping the wattprint exporters?")
    what = "non-catch-all endpoints" if exclude_catch_all else "data"
    return ReportError(f"Prometheus at {client.url} holds no wattprint {what} between {iso(period.start)} "
                       f"and {iso(period.end)}: the range is empty (check --from/--to and the retention)")


def gather(client: Client, period: Period, by: tuple[str, ...], source: str = "auto",
           exclude_catch_all: bool = False, with_daily: bool = False) -> Statement:
    chosen, why = choose_source(client, period, source, by)
    results = totals(client, period, by, chosen, exclude_catch_all)
    notes = []
    if not any(results.values()) and source == "auto" and chosen == "raw" and "instance" not in by:
        fallback = totals(client, period, by, "rollups", exclude_catch_all)
        if any(fallback.values()):
            chosen, results = "rollups", fallback
            why = "rollups (partial: no raw counters in the period)"
            notes.append("The rollups do not cover the whole period and the raw counters are gone: "
                         "the figures cover only the hours the rollups hold.")
    if not any(results.values()):
        raise nothing_found(client, period, exclude_catch_all)
    fx, training = factors(client, period)
    rows = fold(by, results, training)
    if with_daily:
        daily(client, period, by, chosen, exclude_catch_all, rows)
    return Statement(client.url, period, by, chosen, rows, fx, exclude_catch_all, notes, why)


__all__ = ["COUNTERS", "ReportError", "PrometheusError", "SOURCES", "choose_source", "gather", "increase_expr"]
