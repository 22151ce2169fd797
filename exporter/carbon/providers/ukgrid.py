"""UK Carbon Intensity API (NESO; no key; CC BY 4.0): Great Britain, national or one region.

National: GET {base}/intensity → data[0].intensity.{actual, forecast} (actual is null until the
half-hour is settled, so forecast is the fallback). Regional: GET {base}/regional/regionid/{id}
→ data[0].data[0].intensity.forecast (regions publish forecasts only). Values are the API's own
(operational, not lifecycle) gCO2/kWh; the data point's time is the period's ``from``.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from .base import Provider, ProviderError, Reading, dig, number, parse_time


@dataclass(kw_only=True, eq=False)
class UKCarbonIntensity(Provider):
    key = "ukgrid"
    source = "NESO Carbon Intensity API (CC BY 4.0)"
    not_found_statuses = (400, 404)  # an unknown region id is answered 400

    region_id: int | None = None  # None: national (GB)
    base_url: str = "https://api.carbonintensity.org.uk"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.region_id is not None and (not isinstance(self.region_id, int) or isinstance(self.region_id, bool)
                                           or self.region_id < 1):
            raise ValueError(f"region_id must be a positive integer, got {self.region_id!r}")

    @property
    def zone(self) -> str:
        return "GB" if self.region_id is None else f"GB-{int(self.region_id)}"

    async def fetch(self, session: aiohttp.ClientSession) -> list[Reading]:
        base = self.base_url.rstrip("/")
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
