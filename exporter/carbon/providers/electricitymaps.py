"""Electricity Maps API v3: latest average (lifecycle by default) intensity of one zone, and, with
``forecast: true``, its forecast.

GET {base}/v3/carbon-intensity/latest?zone=Z&shouldUseFallbackCallerLookup=false, header
``auth-token``. Without ``shouldUseFallbackCallerLookup=false`` the API may answer for the zone
of the caller's IP address, so the answered ``zone`` is checked too.

Forecast: GET {base}/v3/carbon-intensity/forecast?zone=Z → {"zone", "forecast": [{"carbonIntensity",
"datetime"}, ...] (hourly, 24 h by default), "updatedAt"} (Electricity Maps API reference v3,
portal.electricitymaps.com/developer-hub/api/reference; a paid-plan endpoint). The upstream
forecast is refreshed hourly, so it is fetched at most every ``forecast_every_s``: one more call
per zone an hour, whatever the poll interval. A failing forecast call keeps the last forecast
(its points age out) and never fails the current reading.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import aiohttp

from .base import Provider, ProviderError, Reading, Secret, dig, number, parse_time

log = logging.getLogger(__name__)


@dataclass(kw_only=True, eq=False)
class ElectricityMaps(Provider):
    key = "electricitymaps"
    source = "Electricity Maps API v3 carbon-intensity/latest"

    zone: str
    token: Secret
    base_url: str = "https://api.electricitymaps.com"
    emission_factor_type: str = "lifecycle"  # or "direct"
    disable_estimations: bool = False
    forecast: bool = False  # also read /v3/carbon-intensity/forecast (paid plans)
    forecast_every_s: float = 3600.0
    _forecast: tuple[tuple[float, float], ...] = field(default=(), init=False, repr=False)
    _forecast_at: float | None = field(default=None, init=False, repr=False)
    _forecast_error: str | None = field(default=None, init=False, repr=False)

    def secrets(self) -> list[str]:
        return [self.token.reveal()]

    def _get(self, session: aiohttp.ClientSession, what: str, params: dict[str, str]):
        return self.get_json(session, f"{self.base_url.rstrip('/')}/v3/carbon-intensity/{what}",
                             params=params, headers={"auth-token": self.token.reveal()})

    def _check_zone(self, body: object) -> None:
        answered = dig(body, "zone")
        if answered != self.zone:
            raise ProviderError("zone_not_found", f"asked for {self.zone}, answered {answered}")

    async def fetch(self, session: aiohttp.ClientSession) -> list[Reading]:
        params = {
            "zone": self.zone,
            "emissionFactorType": self.emission_factor_type,
            "shouldUseFallbackCallerLookup": "false",
        }
        if self.disable_estimations:
            params["disableEstimations"] = "true"
        body = await self._get(session, "latest", params)
        self._check_zone(body)
        value = number(dig(body, "carbonIntensity"), "carbonIntensity")
        reading = self.reading(self.zone, "average", value, parse_time(dig(body, "datetime")))
        if self.forecast:
            await self._refresh_forecast(session, params)
            now = self.clock()
            reading = replace(reading, forecast=tuple(p for p in self._forecast if p[0] >= now - 3600))
        return [reading]

    async def _refresh_forecast(self, session: aiohttp.ClientSession, params: dict[str, str]) -> None:
        now = self.clock()
        if self._forecast_at is not None and now - self._forecast_at < self.forecast_every_s:
            return
        self._forecast_at = now  # a failure is retried at the next due time, not at every poll
        try:
            body = await self._get(session, "forecast", {k: v for k, v in params.items()
                                                         if k != "shouldUseFallbackCallerLookup"})
            self._check_zone(body)
            points = dig(body, "forecast")
            if not isinstance(points, list):
                raise ProviderError("malformed", "forecast is not a list")
            self._forecast = self.forecast_points(self.zone, [
                (parse_time(dig(p, "datetime")), number(dig(p, "carbonIntensity"), "carbonIntensity"))
                for p in points])
        except ProviderError as exc:
            if self._forecast_error != exc.kind:
                log.warning("Electricity Maps forecast for %s failed (%s); keeping the last one",
                            self.zone, self._scrub(str(exc)))
            self._forecast_error = exc.kind
            return
        self._forecast_error = None
