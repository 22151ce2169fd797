"""UK Carbon Intensity API (NESO; no key; CC BY 4.0): Great Britain, national or one region.

National: GET {base}/intensity → data[0].intensity.{actual, forecast} (actual is null until the
half-hour is settled, so forecast is the fallback). Regional: GET {base}/regional/regionid/{id}
→ data[0].data[0].intensity.forecast (regions publish forecasts only). Values are the API's own
(operational, not lifecycle) gCO2/kWh; the data point's time is the period's ``from``.

Forecast (national, ``forecast: true``): GET {base}/intensity/{from}/fw24h, ``from`` the current
half-hour's start (``2018-01-20T12:00Z``) → data: the 48 half-hour periods from it, each
{from, to, intensity: {forecast, actual, index}} (carbon-intensity.github.io/api-definitions,
"Get Carbon Intensity data for next 24h"). One call gives both the current value (the period
holding now) and the forecast, so it replaces GET /intensity.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

import aiohttp

from .base import Provider, ProviderError, Reading, dig, number, parse_time


@dataclass(kw_only=True, eq=False)
class UKCarbonIntensity(Provider):
    key = "ukgrid"
    source = "NESO Carbon Intensity API (CC BY 4.0)"
    not_found_statuses = (400, 404)  # an unknown region id is answered 400

    region_id: int | None = None  # None: national (GB)
    base_url: str = "https://api.carbonintensity.org.uk"
    forecast: bool = False  # national only: /intensity/{now}/fw24h instead of /intensity

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.region_id is not None and (not isinstance(self.region_id, int) or isinstance(self.region_id, bool)
                                           or self.region_id < 1):
            raise ValueError(f"region_id must be a positive integer, got {self.region_id!r}")
        if self.forecast and self.region_id is not None:
            raise ValueError("forecast is read for the national intensity only (no region_id)")

    @property
    def zone(self) -> str:
        return "GB" if self.region_id is None else f"GB-{int(self.region_id)}"

    async def fetch(self, session: aiohttp.ClientSession) -> list[Reading]:
        base = self.base_url.rstrip("/")
        if self.forecast:
            return [await self._with_forecast(session, base)]
        if self.region_id is None:
            period = dig(await self.get_json(session, f"{base}/intensity"), "data", 0)
            intensity = dig(period, "intensity")
            value = intensity.get("actual") if isinstance(intensity, dict) else None
            if value is None:
                value = dig(intensity, "forecast")
        else:
            body = await self.get_json(session, f"{base}/regional/regionid/{int(self.region_id)}")
            region = dig(body, "data", 0)
            if dig(region, "regionid") != int(self.region_id):
                raise ProviderError("zone_not_found", f"asked for region {self.region_id}")
            period = dig(region, "data", 0)
            value = dig(period, "intensity", "forecast")
        observed = parse_time(dig(period, "from"))
        return [self.reading(self.zone, "average", number(value, "intensity"), observed)]

    async def _with_forecast(self, session: aiohttp.ClientSession, base: str) -> Reading:
        now = self.clock()
        start = datetime.fromtimestamp(now - now % 1800, UTC).strftime("%Y-%m-%dT%H:%MZ")
        periods = dig(await self.get_json(session, f"{base}/intensity/{start}/fw24h"), "data")
        if not isinstance(periods, list):
            raise ProviderError("malformed", "data is not a list")
        points, current, last_end = [], None, None
        for period in periods:
            begin, end = parse_time(dig(period, "from")), parse_time(dig(period, "to"))
            intensity = dig(period, "intensity")
            forecast = number(dig(intensity, "forecast"), "intensity.forecast")
            points.append((begin, forecast))
            last_end = end if last_end is None else max(last_end, end)
            if begin <= now < end:
                actual = intensity.get("actual") if isinstance(intensity, dict) else None
                current = (begin, forecast if actual is None else number(actual, "intensity.actual"))
        if current is None:
            if last_end is not None and last_end <= now:
                raise ProviderError("stale", f"the forecast ended {(now - last_end) / 3600:.1f} h ago")
            raise ProviderError("malformed", "no period holds the current time")
        reading = self.reading(self.zone, "average", current[1], current[0])
        return replace(reading, forecast=self.forecast_points(self.zone, points))
