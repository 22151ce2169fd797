"""Fake Electricity Maps v3, WattTime v3 and UK Carbon Intensity servers on 127.0.0.1.

Each reproduces its API's paths, query parameters, auth and JSON shapes (docs/reference
carbon-accounting.md §3) and can be switched into one failure mode at a time:

    async with fake_apis() as apis:
        apis.em.mode = "rate_limited"
        ...

Every request is recorded in ``fake.requests`` as (path, query dict). 401 bodies echo the
credential they were sent, so tests can check that clients scrub it.

Forecast shapes, as documented:

* Electricity Maps v3 ``GET /v3/carbon-intensity/forecast?zone=Z`` → {"zone", "forecast":
  [{"carbonIntensity", "datetime"}, ...], "updatedAt"}: hourly points from the current hour,
  24 h ahead by default (API reference v3, portal.electricitymaps.com/developer-hub/api/reference;
  the same shape as the Green Software Foundation carbon-aware-sdk's ElectricityMaps
  ForecastedCarbonIntensityData model).
* UK Carbon Intensity ``GET /intensity/{from}/fw24h`` → {"data": [{"from", "to", "intensity":
  {"forecast", "actual", "index"}}, ...]}: the 48 half-hours from the one holding ``from``,
  ``actual`` null for future periods (carbon-intensity.github.io/api-definitions, API v2.0.0,
  "Get Carbon Intensity data for next 24h").

A fake's ``forecast_mode`` (default: its ``mode``) switches its forecast endpoint alone into a
failure mode; ``forecast_value(i)`` is the i-th point's value.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import hdrs, web

from .server import FakeServer

EM_TOKEN = "em-token-5f1d7c0a9e"
WT_USER, WT_PASSWORD = "wattprint", "wt-pass-83b2c61f"
RETRY_AFTER_S = 7
STALE_BY_S = 5 * 3600

# mode → what the data endpoint does instead of answering normally
MODES = (
    "ok",
    "unauthorized",  # 401 whatever the credential
    "rate_limited",  # 429 with Retry-After: RETRY_AFTER_S
    "server_error",  # 500
    "hang",  # never answers (until the fake closes)
    "malformed",  # 200 with a body that is not JSON
    "bad_shape",  # 200 with JSON of the wrong shape
    "zone_not_found",  # the API's own "unknown zone/region" answer
    "stale",  # a data point STALE_BY_S old
    "negative",
    "absurd",  # 99,999 g/kWh
    "nan",  # a NaN literal, as Python's json emits it
)


def async_test(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test function in a fresh event loop (no pytest plugin needed)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper


def iso(ts: float, fmt: str) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime(fmt)


@dataclass
class Point:
    value: float | None
    observed_at: float


class FakeApi(FakeServer):
    """A provider API: the request log and the failure modes. Subclasses add routes and the
    API's body shapes."""

    value: float = 300.0
    forecast_mode: str | None = None

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.forecast_value: Callable[[int], float] = lambda i: self.value + i
        # how a 401 echoes the credential: a function of it (servers pad, quote, cut it)
        self.echo: Callable[[str], str] = lambda given: f"invalid credential {given!r}"

    def unauthorized(self, given: str) -> web.Response:
        return web.json_response({"message": self.echo(given)}, status=401)

    def not_found(self, request: web.Request) -> web.Response:
        raise NotImplementedError

    def calls(self, path: str) -> int:
        """Requests seen whose path starts with ``path``."""
        return sum(1 for p, _ in self.requests if p.startswith(path))

    async def serve(
        self, request: web.Request, credential: str | None, expected: str | None, body: Callable[[Point], Any],
        mode: str | None = None,
    ) -> web.StreamResponse:
        """The data endpoint: record, apply the mode or auth check, else answer body(point)."""
        self.requests.append((request.path, dict(request.query)))
        mode = mode or self.mode
        if mode == "hang":
            return await self.hang()
        if mode == "unauthorized" or credential != expected:
            return self.unauthorized(credential or "")
        if mode == "rate_limited":
            return web.json_response(
                {"message": "rate limit exceeded"}, status=429, headers={"Retry-After": str(RETRY_AFTER_S)}
            )
        if mode == "server_error":
            return web.Response(status=500, text="Internal Server Error")
        if mode == "malformed":
            return web.Response(text='{"data": [', content_type="application/json")
        if mode == "bad_shape":
            return web.json_response({"unexpected": [1, 2, 3]})
        if mode == "zone_not_found":
            return self.not_found(request)
        now = time.time()
        value = {"negative": -12.0, "absurd": 99_999.0, "nan": float("nan")}.get(mode, self.value)
        return web.json_response(body(Point(value, now - STALE_BY_S if mode == "stale" else now)))


class ElectricityMapsFake(FakeApi):
    """GET /v3/carbon-intensity/latest?zone=Z, header auth-token."""

    zones = frozenset({"DE", "FR"})
    answer_zone: str | None = None  # set to answer for another zone (the API's IP fallback)

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v3/carbon-intensity/latest", self.latest)
        router.add_get("/v3/carbon-intensity/forecast", self.forecast)

    def not_found(self, request: web.Request) -> web.Response:
        zone = request.query.get("zone", "")
        return web.json_response({"status": "error", "error": f"Zone '{zone}' does not exist."}, status=404)

    async def latest(self, request: web.Request) -> web.StreamResponse:
        zone = request.query.get("zone", "")
        if zone not in self.zones and self.mode == "ok":
            self.requests.append((request.path, dict(request.query)))
            return self.not_found(request)
        stamp = "%Y-%m-%dT%H:%M:%S.000Z"
        return await self.serve(
            request,
            request.headers.get("auth-token"),
            EM_TOKEN,
            lambda p: {
                "zone": self.answer_zone or zone,
                "carbonIntensity": p.value,
                "datetime": iso(p.observed_at, stamp),
                "updatedAt": iso(p.observed_at + 60, stamp),
                "createdAt": iso(p.observed_at - 86400, stamp),
                "emissionFactorType": request.query.get("emissionFactorType", "lifecycle"),
                "isEstimated": False,
                "estimationMethod": None,
            },
        )


    async def forecast(self, request: web.Request) -> web.StreamResponse:
        zone = request.query.get("zone", "")
        mode = self.forecast_mode or self.mode
        if zone not in self.zones and mode == "ok":
            self.requests.append((request.path, dict(request.query)))
            return self.not_found(request)
        stamp = "%Y-%m-%dT%H:%M:%S.000Z"

        def body(p: Point) -> dict[str, Any]:
            hour = p.observed_at - p.observed_at % 3600
            values = [p.value if i == 0 else self.forecast_value(i) for i in range(25)]
            return {
                "zone": self.answer_zone or zone,
                "forecast": [{"carbonIntensity": v, "datetime": iso(hour + 3600 * i, stamp)} for i, v in enumerate(values)],
                "updatedAt": iso(hour, stamp),
            }

        return await self.serve(request, request.headers.get("auth-token"), EM_TOKEN, body, mode)


class WattTimeFake(FakeApi):
    """GET /login (HTTP Basic) → {"token"}; GET /v3/forecast?region&signal_type (Bearer)."""

    value = 1000.0  # lbs CO2/MWh
    regions = frozenset({"CAISO_NORTH"})

    def __init__(self) -> None:
        super().__init__()
        self.tokens: set[str] = set()
        self.logins = 0

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/login", self.login)
        router.add_get("/v3/forecast", self.forecast)

    def revoke_tokens(self) -> None:
        """As if every token had passed its 30 minutes."""
        self.tokens.clear()

    def not_found(self, request: web.Request) -> web.Response:
        return web.json_response({"error": "Unknown region", "message": request.query.get("region")}, status=404)

    async def login(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.query)))
        scheme, _, encoded = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except ValueError:
            user = password = ""
        if scheme != "Basic" or (user, password) != (WT_USER, WT_PASSWORD):
            return self.unauthorized(password)
        self.logins += 1
        token = f"jwt-{self.logins}-9c4e"
        self.tokens.add(token)
        return web.json_response({"token": token})

    async def forecast(self, request: web.Request) -> web.StreamResponse:
        region = request.query.get("region", "")
        if region not in self.regions and self.mode == "ok":
            return self.not_found(request)
        bearer = request.headers.get(hdrs.AUTHORIZATION, "").removeprefix("Bearer ")
        return await self.serve(
            request,
            bearer,
            bearer if bearer in self.tokens else None,
            lambda p: {
                "data": [
                    {"point_time": iso(p.observed_at + 300 * i, "%Y-%m-%dT%H:%M:%S+00:00"), "value": p.value}
                    for i in range(int(request.query.get("horizon_hours", 24)) * 12 or 1)
                ],
                "meta": {
                    "region": region,
                    "signal_type": request.query.get("signal_type"),
                    "units": "lbs_co2_per_mwh",
                    "data_point_period_seconds": 300,
                    "generated_at": iso(p.observed_at, "%Y-%m-%dT%H:%M:%S+00:00"),
                    "generated_at_period_seconds": 300,
                    "model": {"date": "2023-03-01"},
                },
            },
        )


class UKCarbonIntensityFake(FakeApi):
    """GET /intensity and /regional/regionid/{1-17}; no key."""

    value = 180.0
    with_actual = True  # False: the current half-hour is not settled yet (actual: null)

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/intensity", self.national)
        router.add_get("/intensity/{from}/fw24h", self.forward)
        router.add_get("/regional/regionid/{id}", self.regional)

    def not_found(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"error": {"code": "400 Bad Request", "message": "Please enter a valid region ID i.e. 1-17."}}, status=400
        )

    @staticmethod
    def period(p: Point, intensity: dict[str, Any]) -> dict[str, Any]:
        start = p.observed_at - p.observed_at % 1800
        return {
            "from": iso(start, "%Y-%m-%dT%H:%MZ"),
            "to": iso(start + 1800, "%Y-%m-%dT%H:%MZ"),
            "intensity": intensity,
        }

    async def national(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(
            request,
            None,
            None,
            lambda p: {
                "data": [
                    self.period(
                        p,
                        {"forecast": p.value, "actual": p.value if self.with_actual else None, "index": "moderate"},
                    )
                ]
            },
        )

    async def forward(self, request: web.Request) -> web.StreamResponse:
        try:
            start = datetime.strptime(request.match_info["from"], "%Y-%m-%dT%H:%MZ").replace(tzinfo=UTC).timestamp()
        except ValueError:
            self.requests.append((request.path, dict(request.query)))
            return self.not_found(request)

        def body(p: Point) -> dict[str, Any]:
            stale = (self.forecast_mode or self.mode) == "stale"  # a forecast that ended STALE_BY_S ago
            first = start - start % 1800 - (86400 + STALE_BY_S if stale else 0)
            return {"data": [
                {"from": iso(first + 1800 * i, "%Y-%m-%dT%H:%MZ"), "to": iso(first + 1800 * (i + 1), "%Y-%m-%dT%H:%MZ"),
                 "intensity": {"forecast": p.value if i == 0 else self.forecast_value(i),
                               "actual": p.value if i == 0 and self.with_actual else None, "index": "moderate"}}
                for i in range(48)]}

        return await self.serve(request, None, None, body, self.forecast_mode)

    async def regional(self, request: web.Request) -> web.StreamResponse:
        region = request.match_info["id"]
        if not (region.isdigit() and 1 <= int(region) <= 17) and self.mode == "ok":
            return self.not_found(request)
        mix = [{"fuel": f, "perc": pc} for f, pc in (("gas", 38.2), ("wind", 31.5), ("nuclear", 15.3), ("solar", 15.0))]
        return await self.serve(
            request,
            None,
            None,
            lambda p: {
                "data": [
                    {
                        "regionid": int(region),
                        "dnoregion": "Scottish Hydro Electric Power Distribution",
                        "shortname": "North Scotland",
                        "data": [{**self.period(p, {"forecast": p.value, "index": "low"}), "generationmix": mix}],
                    }
                ]
            },
        )


@dataclass
class FakeApis:
    em: ElectricityMapsFake
    wt: WattTimeFake
    uk: UKCarbonIntensityFake


@contextlib.asynccontextmanager
async def fake_apis() -> AsyncIterator[FakeApis]:
    fakes = FakeApis(ElectricityMapsFake(), WattTimeFake(), UKCarbonIntensityFake())
    servers = (fakes.em, fakes.wt, fakes.uk)
    try:
        for fake in servers:
            await fake.start()
        yield fakes
    finally:
        for fake in servers:
            await fake.close()
