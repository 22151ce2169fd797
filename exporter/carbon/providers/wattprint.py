"""The cluster's own intensity service (``wattprint intensity``): a node reads the intensity that
one process polled for the whole cluster, instead of calling the third-party API itself.

GET {url}/api/v1/intensity?zone=Z&signal=S → {"zone", "signal", "provider", "grams_per_kwh",
"observed_at", "fetched_at", "forecast": [...]} (exporter/intensity_server.py). The answer is
checked like any provider's: the zone and signal asked for, a plausible value, a data point
neither stale nor in the future. 404 (a zone the service has never read) is ``zone_not_found``,
503 (no fresh reading there yet) ``http_5xx``; on any failure the node keeps its last good value
until carbon.max_age, then prices with its bundled static value, as with any failing provider.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from .base import SIGNALS, Provider, ProviderError, Reading, dig, number, parse_time

API_PATH = "/api/v1/intensity"


@dataclass(kw_only=True, eq=False)
class WattprintService(Provider):
    key = "wattprint"
    source = "wattprint intensity service"

    url: str  # the service, e.g. http://wattprint-intensity.monitoring.svc:10067
    zone: str
    signal: str = "average"
    poll_interval_s: float | None = 60.0  # in-cluster and cheap: the service answers from memory

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must be http:// or https://, got {self.url!r}")
        if self.signal not in SIGNALS:
            raise ValueError(f"signal must be one of {SIGNALS}")

    async def fetch(self, session: aiohttp.ClientSession) -> list[Reading]:
        body = await self.get_json(session, self.url.rstrip("/") + API_PATH,
                                   params={"zone": self.zone, "signal": self.signal})
        if dig(body, "zone") != self.zone:
            raise ProviderError("zone_not_found", f"asked for {self.zone}, answered {str(body['zone'])[:40]}")
        if dig(body, "signal") != self.signal:
            raise ProviderError("malformed", f"asked for signal {self.signal}")
        value = number(dig(body, "grams_per_kwh"), "grams_per_kwh")
        return [self.reading(self.zone, self.signal, value, parse_time(dig(body, "observed_at")))]
