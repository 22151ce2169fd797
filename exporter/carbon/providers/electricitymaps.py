"""Electricity Maps API v3: latest average (lifecycle by default) intensity of one zone.

GET {base}/v3/carbon-intensity/latest?zone=Z&shouldUseFallbackCallerLookup=false, header
``auth-token``. Without ``shouldUseFallbackCallerLookup=false`` the API may answer for the zone
of the caller's IP address, so the answered ``zone`` is checked too.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from .base import Provider, ProviderError, Reading, Secret, dig, number, parse_time


@dataclass(kw_only=True, eq=False)
class ElectricityMaps(Provider):
    key = "electricitymaps"
    source = "Electricity Maps API v3 carbon-intensity/latest"

    zone: str
    token: Secret
    base_url: str = "https://api.electricitymaps.com"
    emission_factor_type: str = "lifecycle"  # or "direct"
    disable_estimations: bool = False

    def secrets(self) -> list[str]:
        return [self.token.reveal()]

    async def fetch(self, session: aiohttp.ClientSession) -> list[Reading]:
        params = {
            "zone": self.zone,
            "emissionFactorType": self.emission_factor_type,
            "shouldUseFallbackCallerLookup": "false",
        }
        if self.disable_estimations:
            params["disableEstimations"] = "true"
        body = await self.get_json(
            session,
            f"{self.base_url.rstrip('/')}/v3/carbon-intensity/latest",
            params=params,
            headers={"auth-token": self.token.reveal()},
        )
        answered = dig(body, "zone")
        if answered != self.zone:
            raise ProviderError("zone_not_found", f"asked for {self.zone}, answered {answered}")
        value = number(dig(body, "carbonIntensity"), "carbonIntensity")
        return [self.reading(self.zone, "average", value, parse_time(dig(body, "datetime")))]
