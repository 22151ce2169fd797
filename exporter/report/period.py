"""The report's period: ``--from``/``--to`` parsed into Unix times (pure, ``now`` passed in),
and the PromQL range and display strings built from them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

DAY = 86400.0
_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)(s|m|h|d|w)$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY, "w": 7 * DAY}
HINT = "use 2026-11-01, 2026-11-01T12:00:00Z, -30d, -12h or now"


class OptionError(ValueError):
    """An option the report cannot take (exit status 2)."""


class PeriodError(OptionError):
    """A --from/--to that is not a time, or a period that is empty or backwards."""


def parse_time(text: str, now: float, flag: str = "--from") -> float:
    """``now``; ``-30d``/``-12h``/``-90m``/``-2w``/``-45s`` before ``now``; an ISO date (midnight
    UTC) or date-time (UTC when it names no offset)."""
    t = text.strip()
    if t.lower() == "now":
        return now
    m = _RELATIVE.match(t)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        dt = datetime.fromisoformat(t[:-1] + "+00:00" if t.endswith(("Z", "z")) else t)
    except ValueError:
        raise PeriodError(f"{flag}={text!r}: not a time ({HINT})") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def iso(t: float) -> str:
    """A Unix time as ``2026-11-01T00:00:00Z`` (seconds; milliseconds when it has them)."""
    dt = datetime.fromtimestamp(t, tz=timezone.utc)
    text = dt.isoformat(timespec="milliseconds" if dt.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def promql_duration(seconds: float) -> str:
    """A PromQL range in milliseconds (exact for any period)."""
    return f"{int(round(seconds * 1000))}ms"


@dataclass(frozen=True)
class Period:
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def range(self) -> str:
        return promql_duration(self.seconds)

    def describe(self) -> str:
        days = self.seconds / DAY
        length = f"{days:g} days" if days >= 1 else f"{self.seconds / 3600:g} hours"
        return f"{iso(self.start)} → {iso(self.end)} ({length})"

    def days(self) -> list[tuple[float, float]]:
        """Consecutive whole days from the start (the last one shorter when the period is not a
        whole number of days)."""
        out, t = [], self.start
        while t < self.end - 1e-6:
            out.append((t, min(t + DAY, self.end)))
            t += DAY
        return out


def parse_period(start: str, end: str, now: float) -> Period:
    p = Period(parse_time(start, now, "--from"), parse_time(end, now, "--to"))
    if p.end <= p.start:
        raise PeriodError(f"empty period: --from={start!r} ({iso(p.start)}) is not before "
                          f"--to={end!r} ({iso(p.end)})")
    if p.seconds < 1:
        raise PeriodError(f"period under a second: --from={start!r} --to={end!r}")
    return p
