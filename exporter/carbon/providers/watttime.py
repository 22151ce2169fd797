"""WattTime API v3: the current marginal operating emissions rate (MOER) of one region.

Login: GET {base}/login with HTTP Basic auth → {"token"} (a JWT valid 30 min; refreshed ahead of
expiry and once on a 401). Data: GET {base}/v3/forecast?region=R&signal_type=co2_moer&horizon_hours=0;
its first point is the current 5-minute interval, in lbs CO2/MWh (``meta.units``).
``/v3/signal-index`` is not used: it returns a 0-100 percentile, not a rate.
Marginal only: never to be mixed into average (attributional) totals.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import aiohttp

from .base import (
    LBS_PER_MWH_TO_G_PER_KWH,
    Provider,
    ProviderError,
    Reading,
    Secret,
    dig,
    number,
    parse_time,
)

TOKEN_LIFETIME_S = 30 * 60
TOKEN_REFRESH_MARGIN_S = 120


@dataclass(kw_only=True, eq=False)
class WattTime(Provider):
    key = "watttime"
    source = "WattTime API v3 forecast (current co2_moer)"

    region: str
    username: str
    password: Secret
    base_url: str = "https://api.watttime.org"
    stale_after_s: float | None = 3600.0  # 5-minute data
    _token: str | None = field(default=None, init=False, repr=False)
    _token_expires_at: float = field(default=0.0, init=False, repr=False)

    def secrets(self) -> list[str]:
        return [self.password.reveal()] + ([self._token] if self._token else [])

    async def _login(self, session: aiohttp.ClientSession) -> str:
        basic = base64.b64encode(f"{self.username}:{self.password.reveal()}".encode()).decode()
        headers = {"Authorization": f"Basic {basic}"}
        body = await self.get_json(session, f"{self.base_url.rstrip('/')}/login", headers=headers)
        token = dig(body, "token")
        if not isinstance(token, str) or not token:
            raise ProviderError("malformed", "login answered no token")
        self._token = token
        self._token_expires_at = self.clock() + TOKEN_LIFETIME_S - TOKEN_REFRESH_MARGIN_S
        return token

    async def fetch(self, session: aiohttp.ClientSession) -> list[Reading]:
        params = {"region": self.region, "signal_type": "co2_moer", "horizon_hours": "0"}
        for retry in (False, True):
            token = self._token
            if token is None or self.clock() >= self._token_expires_at:
                token = await self._login(session)
            try:
                body = await self.get_json(
                    session,
                    f"{self.base_url.rstrip('/')}/v3/forecast",
                    params=params,
                    headers={"Authorization": f"Bearer {token}"},
                )
                break
            except ProviderError as exc:
                if exc.kind != "auth":
                    raise
                self._token = None  # expired or revoked: log in again, once
                if retry:
                    raise
        units, region = dig(body, "meta", "units"), dig(body, "meta", "region")
        if units != "lbs_co2_per_mwh":
            raise ProviderError("malformed", f"units {str(units)[:40]!r}, expected lbs_co2_per_mwh")
        if region != self.region:
            raise ProviderError("zone_not_found", f"asked for {self.region}, answered {region}")
        point = dig(body, "data", 0)
        lbs_per_mwh = number(dig(point, "value"), "value")
        observed = parse_time(dig(point, "point_time"))
        return [self.reading(self.region, "marginal", lbs_per_mwh * LBS_PER_MWH_TO_G_PER_KWH, observed)]
