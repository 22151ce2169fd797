"""What every grid-intensity provider shares: the reading, the error, secrets, one HTTP GET.

A provider is a small adapter with one ``async fetch(session) -> list[Reading]``. It validates
what it returns (units converted to gCO2e/kWh, plausible, not stale) and raises ProviderError
with a machine-readable ``kind`` for everything else. Credentials live in ``Secret`` objects that
read a file or an environment variable at each use and never print their value; error text that
comes back from a server is scrubbed of every credential before it goes into an exception.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, ClassVar

import aiohttp

SIGNALS = ("average", "marginal")
MAX_PLAUSIBLE_G_PER_KWH = 2500.0  # above any real grid (lignite alone is ~1,100 lifecycle)
LBS_PER_MWH_TO_G_PER_KWH = 0.45359237  # 453.59237 g/lb ÷ 1000 kWh/MWh

ERROR_KINDS = (
    "auth",  # 401/403, bad or unreadable credential
    "rate_limited",  # 429; retry_after_s set when the server said
    "http_5xx",
    "http_4xx",  # any other client error
    "timeout",
    "network",  # refused, reset, DNS
    "malformed",  # not JSON, or not the documented shape/units
    "zone_not_found",  # unknown zone/region, or the API answered for another zone
    "implausible",  # negative, NaN, infinite or > MAX_PLAUSIBLE_G_PER_KWH
    "stale",  # the data point is older than the provider's stale_after_s
    "io",  # file provider: cannot read the file
    "internal",  # a bug in an adapter (counted by IntensityService, never raised here)
)


@dataclass(frozen=True)
class Reading:
    provider: str
    zone: str
    signal: str  # "average" | "marginal"
    grams_per_kwh: float
    observed_at: float  # unix seconds of the data point's own datetime
    # the provider's forecast, where it has one: ((unix seconds of a period's start, g/kWh), ...),
    # in time order, none of it older than the hour before the fetch
    forecast: tuple[tuple[float, float], ...] = ()


FUTURE_TOLERANCE_S = 3600.0
FORECAST_MAX_S = 8 * 86400.0  # the longest forecast any provider publishes is 72 h; beyond this, refuse  # clocks disagree, forecasts are stamped ahead: beyond this, refuse


class ProviderError(Exception):
    def __init__(self, kind: str, message: str = "", retry_after_s: float | None = None):
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown ProviderError kind {kind!r}")
        super().__init__(f"{kind}: {message}" if message else kind)
        self.kind = kind
        self.message = message
        self.retry_after_s = retry_after_s


class Secret:
    """A credential read from a file (e.g. a mounted Kubernetes Secret) or an env var at each use,
    so rotation needs no restart. Its value never appears in repr/str."""

    __slots__ = ("_env", "_file")

    def __init__(self, *, file: str | os.PathLike[str] | None = None, env: str | None = None):
        if (file is None) == (env is None):
            raise ValueError("Secret needs exactly one of file= or env=")
        self._file, self._env = file, env

    @property
    def where(self) -> str:
        return f"file {self._file}" if self._file is not None else f"env ${self._env}"

    def reveal(self) -> str:
        try:
            raw = Path(self._file).read_text() if self._file is not None else os.environ[self._env]
        except (OSError, KeyError, UnicodeDecodeError):
            raise ProviderError("auth", f"credential not readable from {self.where}") from None
        value = raw.strip()
        if not value:
            raise ProviderError("auth", f"credential at {self.where} is empty")
        return value

    def __repr__(self) -> str:
        return f"Secret({self.where}, value=<redacted>)"

    __str__ = __repr__


# --- small parsing helpers, each failing with kind="malformed" -------------------------------


def dig(obj: Any, *path: str | int) -> Any:
    """obj[path[0]][path[1]]…, or ProviderError(malformed) naming the missing path."""
    for step in path:
        try:
            obj = obj[step]
        except (KeyError, IndexError, TypeError):
            raise ProviderError("malformed", f"missing {'.'.join(map(str, path))}") from None
    return obj


def number(value: Any, what: str = "value") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProviderError("malformed", f"{what} is not a number: {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:
        raise ProviderError("malformed", f"{what} is out of range") from None


def parse_time(value: Any) -> float:
    """ISO 8601 (``…Z``, ``…+00:00``, ``2018-01-20T12:00Z``), a datetime, or unix seconds → unix s.
    Naive times are taken as UTC."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return number(value, "timestamp")
    try:
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        elif isinstance(value, date) and not isinstance(value, datetime):
            value = datetime(value.year, value.month, value.day)
        if not isinstance(value, datetime):
            raise TypeError
    except (TypeError, ValueError):
        raise ProviderError("malformed", f"not a timestamp: {str(value)[:40]!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def parse_retry_after(header: str | None, now: float) -> float | None:
    """Retry-After is delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(header).timestamp() - now)
    except (TypeError, ValueError, IndexError):
        return None


def _error_detail(body: str) -> str:
    """The ``error`` or ``message`` of a JSON error body (both are seen in the wild), short."""
    try:
        doc = json.loads(body)
    except ValueError:
        return ""
    detail = (doc.get("error") or doc.get("message")) if isinstance(doc, dict) else None
    if isinstance(detail, dict):  # UK Carbon Intensity nests {"error": {"code", "message"}}
        detail = detail.get("message")
    return str(detail) if detail else ""  # whole: scrubbed first, then cut (DETAIL_MAX)


DETAIL_MAX = 160  # characters of an error body's message kept, after scrubbing
FRAGMENT = 8  # any run of this many characters of a secret is redacted, wherever it appears


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every secret, and every run of ``FRAGMENT`` or more characters of one (an
    echo of part of a token, a token cut by the server), replaced by ``<redacted>``. A secret
    shorter than ``FRAGMENT`` is replaced where it appears whole."""
    grams: set[str] = set()
    for value in secrets:
        if not value:
            continue
        if len(value) < FRAGMENT:
            text = text.replace(value, "<redacted>")
            continue
        grams.update(value[i:i + FRAGMENT] for i in range(len(value) - FRAGMENT + 1))
    if not grams:
        return text
    hidden = bytearray(len(text))
    for i in range(len(text) - FRAGMENT + 1):
        if text[i:i + FRAGMENT] in grams:
            hidden[i:i + FRAGMENT] = b"\1" * FRAGMENT
    out, i = [], 0
    while i < len(text):
        if hidden[i]:
            while i < len(text) and hidden[i]:
                i += 1
            out.append("<redacted>")
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


# --- the base class --------------------------------------------------------------------------


@dataclass(kw_only=True, eq=False)
class Provider:
    """Base of every provider. Subclasses set ``key`` (registry name), ``source`` and fields."""

    key: ClassVar[str] = ""
    source: ClassVar[str] = ""
    not_found_statuses: ClassVar[tuple[int, ...]] = (404,)

    name: str = ""  # label value; defaults to key (set it to tell two instances apart)
    timeout_s: float = 10.0
    stale_after_s: float | None = 7200.0
    poll_interval_s: float | None = None  # None: the IntensityService's default
    clock: Callable[[], float] = field(default=time.time, repr=False)
    calls: int = field(default=0, init=False, repr=False)  # HTTP requests made (get_json)

    def __post_init__(self) -> None:
        self.name = self.name or self.key

    def __init_subclass__(cls, **kw: Any) -> None:
        """Every provider's fetch() is wrapped so that no error text it raises, from an error body
        or from a field of a 200 answer, can carry a credential."""
        super().__init_subclass__(**kw)
        inner = cls.__dict__.get("fetch")
        if inner is None:
            return

        @functools.wraps(inner)
        async def fetch(self: "Provider", session: aiohttp.ClientSession | None = None) -> list[Reading]:
            try:
                return await inner(self, session)
            except ProviderError as e:
                clean = self._scrub(e.message)
                if clean == e.message:
                    raise
                raise ProviderError(e.kind, clean, e.retry_after_s) from None

        cls.fetch = fetch  # type: ignore[method-assign]

    async def fetch(self, session: aiohttp.ClientSession) -> list[Reading]:
        raise NotImplementedError

    def secrets(self) -> list[str]:
        """Credential values to scrub from error text (overridden by providers that have some)."""
        return []

    def reading(self, zone: str, signal: str, grams_per_kwh: float, observed_at: float) -> Reading:
        g = float(grams_per_kwh)
        if not math.isfinite(g) or not 0.0 <= g <= MAX_PLAUSIBLE_G_PER_KWH:
            raise ProviderError("implausible", f"{g} gCO2e/kWh for {zone}")
        now = self.clock()
        if not math.isfinite(observed_at) or observed_at > now + FUTURE_TOLERANCE_S:
            raise ProviderError("implausible", f"{zone} data point is timed in the future or not at all")
        age = now - observed_at
        if self.stale_after_s is not None and age > self.stale_after_s:
            raise ProviderError("stale", f"{zone} data point is {age / 3600:.1f} h old")
        return Reading(self.name, zone, signal, g, observed_at)

    def forecast_points(self, zone: str, points: list[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
        """A forecast's (time, g/kWh) points checked like readings (plausible values, times at
        most FORECAST_MAX_S ahead), sorted, without those over an hour old. An empty forecast
        is malformed: the API promised one."""
        now = self.clock()
        out = []
        for t, g in points:
            if not (math.isfinite(g) and 0.0 <= g <= MAX_PLAUSIBLE_G_PER_KWH):
                raise ProviderError("implausible", f"forecast {g} gCO2e/kWh for {zone}")
            if not math.isfinite(t) or t > now + FORECAST_MAX_S:
                raise ProviderError("implausible", f"{zone} forecast point timed beyond {FORECAST_MAX_S / 3600:g} h")
            if t >= now - 3600:
                out.append((t, float(g)))
        if not out:
            raise ProviderError("stale" if points else "malformed", f"{zone} forecast has no current points")
        return tuple(sorted(out))

    def _scrub(self, text: str) -> str:
        try:
            values = self.secrets()
        except ProviderError:
            values = []
        return scrub(text, values)

    async def get_json(self, session: aiohttp.ClientSession, url: str, **request: Any) -> Any:
        """GET url → parsed JSON; every failure becomes a ProviderError (no chained exception,
        since aiohttp's carry the request headers, credentials included)."""
        path = url.split("?", 1)[0]
        self.calls += 1
        try:
            async with session.get(
                url,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                allow_redirects=False,
                **request,
            ) as resp:
                status, body = resp.status, await resp.text()
                retry_after = resp.headers.get("Retry-After")
        except TimeoutError:  # aiohttp's timeouts subclass it
            raise ProviderError("timeout", f"no answer within {self.timeout_s:g} s from {path}") from None
        except (aiohttp.ClientError, UnicodeDecodeError) as exc:
            raise ProviderError("network", f"{type(exc).__name__} from {path}") from None
        if status != 200:
            raise self._http_error(status, body, retry_after)
        try:
            return json.loads(body)
        except ValueError:
            raise ProviderError("malformed", f"{path} did not answer JSON") from None

    def _http_error(self, status: int, body: str, retry_after: str | None) -> ProviderError:
        if status in (401, 403):
            kind = "auth"
        elif status == 429:
            kind = "rate_limited"
        elif status in self.not_found_statuses:
            kind = "zone_not_found"
        else:
            kind = "http_5xx" if status >= 500 else "http_4xx"
        detail = self._scrub(_error_detail(body))[:DETAIL_MAX]  # scrubbed whole, then cut
        wait = parse_retry_after(retry_after, self.clock()) if kind == "rate_limited" else None
        return ProviderError(kind, f"HTTP {status}" + (f": {detail}" if detail else ""), wait)
