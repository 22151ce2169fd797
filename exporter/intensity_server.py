"""``wattprint intensity``: one process per cluster polls the live intensity providers
(carbon.providers, with the same back-off as a node) and serves what it read, so that the API
calls are one per zone per poll interval however many nodes there are.

It serves ``/metrics`` (the intensity per zone, provider and signal, its age, the forecasts at
fixed horizons, provider health and a counter of the calls made), ``/healthz``, ``/readyz`` and a
small JSON API for nodes (their ``wattprint`` provider, exporter/carbon/providers/wattprint.py)::

    GET /api/v1/intensity?zone=DE[&signal=average|marginal]
      200 {zone, signal, provider, source, grams_per_kwh, observed_at, fetched_at, age_seconds,
           forecast: [{datetime, grams_per_kwh}, ...]}
      400 no or a bad zone/signal; 404 a zone no provider has answered for;
      503 nothing fresh (younger than carbon.max_age) for that zone yet
    GET /api/v1/zones → {"zones": [...]}

The listener is the daemon's: web.listen_address (default :10067 here, one above the node's),
the web config's TLS and basic auth, the connection cap and the server limits.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from . import buildinfo, config

log = logging.getLogger("wattprint")

DEFAULT_PORT = config.DEFAULT_PORT + 1
HORIZONS = (("1h", 3600.0), ("6h", 6 * 3600.0), ("24h", 86400.0))
PERIOD_MAX_S = 3600.0  # a forecast point stands for at most this long (hourly or half-hourly data)


def listen_address(cfg: config.Config) -> str:
    """web.listen_address when it is set anywhere (file, environment, flag), else :10067."""
    return cfg.web.listen_address if "listen_address" in cfg.web.model_fields_set else f":{DEFAULT_PORT}"


def at_horizon(points: tuple[tuple[float, float], ...], now: float, ahead_s: float) -> float | None:
    """The forecast for the period holding ``now + ahead_s``: the last point at or before it, if
    that point is at most PERIOD_MAX_S earlier (else the forecast does not reach that far)."""
    target, best = now + ahead_s, None
    for t, g in points:
        if t <= target:
            best = (t, g)
    return best[1] if best is not None and target - best[0] <= PERIOD_MAX_S else None


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


class IntensityServer:
    """What the HTTP handlers answer from: an IntensityService's memory, never the network."""

    def __init__(self, service: Any, clock: Any = time.time) -> None:
        self.service = service  # exporter.carbon.intensity.IntensityService
        self.clock = clock
        from .exposition import Renderer

        self.renderer = Renderer()
        self.cap: Any = None
        self.poller: Any = None  # the service's run() task, once started

    def ready(self) -> bool:
        """Every provider polled once (answered or failed): nodes may ask."""
        return all(st["successes"] or st["errors"] for st in self.service.stats().values())

    def answer(self, zone: str, signal: str) -> tuple[int, dict[str, Any]]:
        from .carbon.providers import SIGNALS

        if not zone or len(zone) > 64:
            return 400, {"error": "give ?zone=", "zones": self.zones()}
        if signal not in SIGNALS:
            return 400, {"error": f"signal must be one of {list(SIGNALS)}"}
        got = self.service.fresh(zone, signal)
        if got is None:
            if zone in self.zones(signal):
                return 503, {"error": f"no {signal} reading for {zone} younger than carbon.max_age"}
            if not self.ready():
                return 503, {"error": "providers not polled yet"}
            return 404, {"error": f"no provider answers {signal} for zone {zone}", "zones": self.zones()}
        r, fetched, source = got
        now = self.clock()
        return 200, {
            "zone": r.zone, "signal": r.signal, "provider": r.provider, "source": source,
            "grams_per_kwh": r.grams_per_kwh, "observed_at": iso(r.observed_at), "fetched_at": iso(fetched),
            "age_seconds": max(0.0, now - r.observed_at),
            "forecast": [{"datetime": iso(t), "grams_per_kwh": g} for t, g in r.forecast if t >= now - PERIOD_MAX_S],
        }

    def zones(self, signal: str | None = None) -> list[str]:
        """The zones some provider has answered for (with ``signal``)."""
        return sorted({r.zone for r in self.service.readings() if signal in (None, r.signal)})

    def snapshot(self) -> Any:
        from .exposition import Snapshot

        snap, now = Snapshot(), self.clock()
        for r in self.service.readings():
            snap.set("grid_intensity_grams_per_kwh", ("", r.zone, r.provider, r.signal), r.grams_per_kwh)
            snap.set("grid_intensity_age_seconds", (r.provider, r.zone, r.signal), max(0.0, now - r.observed_at))
            for horizon, ahead in HORIZONS:
                g = at_horizon(r.forecast, now, ahead)
                if g is not None:
                    snap.set("grid_intensity_forecast_grams_per_kwh", (r.provider, r.zone, horizon), g)
        for name, st in self.service.stats().items():
            snap.set("collector_up", (f"intensity_{name}",), 1.0 if st["up"] else 0.0)
            snap.set("intensity_provider_calls_total", (name,), float(st["calls"]))
            for kind, n in st["errors"].items():
                snap.set("collector_errors_total", (f"intensity_{name}", kind), float(n))
        snap.set("build_info", buildinfo.labels(), 1)
        if self.cap is not None:
            self.cap.contribute(snap)
        return snap

    def make_app(self, security: Any = None, cap: Any = None) -> Any:
        from aiohttp import web

        from .exposition import CONTENT_TYPE
        from .server import hardened_app

        self.cap = cap

        async def metrics(request: web.Request) -> web.Response:
            body = self.renderer.render(self.snapshot()).text
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

        async def healthz(request: web.Request) -> web.Response:
            if self.poller is not None and self.poller.done():
                return web.Response(status=503, text="the polling loop has stopped\n")
            return web.Response(text="ok\n")

        async def readyz(request: web.Request) -> web.Response:
            if not self.ready():
                return web.Response(status=503, text="waiting for the first poll of every provider\n")
            return web.Response(text="ready\n")

        async def intensity(request: web.Request) -> web.Response:
            status, body = self.answer(request.query.get("zone", ""), request.query.get("signal", "average"))
            return web.json_response(body, status=status)

        async def zones(request: web.Request) -> web.Response:
            return web.json_response({"zones": self.zones()})

        return hardened_app({"/metrics": metrics, "/healthz": healthz, "/readyz": readyz,
                             "/api/v1/intensity": intensity, "/api/v1/zones": zones}, security, cap)


def build_service(cfg: config.Config) -> Any:
    """The IntensityService of carbon.providers (the daemon's builder). Its static value is never
    served: each node prices with its own region's when the service has nothing fresh."""
    from .carbon import accounting
    from .carbon.intensity import IntensityService
    from .daemon import build_providers

    providers = build_providers(cfg)
    if not providers:
        raise config.ConfigError("wattprint intensity needs carbon.providers (the providers to poll "
                                 "for the cluster), e.g. [{type: electricitymaps, zone: DE, token_env: ...}]")
    region = accounting.resolve_static(cfg.carbon.region, "config")
    return IntensityService(providers, region.grams_per_kwh, region.source, max_age_s=cfg.carbon.max_age,
                            static_zone=region.key)


def serve(cfg: config.Config) -> int:
    """``wattprint intensity``: run until SIGINT/SIGTERM; SIGHUP re-reads the web config."""
    import asyncio

    from . import daemon

    service = build_service(cfg)
    security = daemon.web_security(cfg)
    address = listen_address(cfg)
    fd_limit = daemon.open_files_limit()

    async def main() -> int:
        server = IntensityServer(service)
        cap = daemon.connection_cap(fd_limit)
        runner, listener = await daemon.start_http(server.make_app(security, cap), address, security, cap)
        server.poller = asyncio.create_task(service.run())
        background = [server.poller]
        reloader = daemon.start_web_reloader(cfg, security, background)

        def hangup() -> None:
            log.info("SIGHUP: web config %s", "none" if reloader is None else
                     ("reloaded" if reloader.reload_now() else "failed (kept)"))
        log.info("intensity service listening on %s: %d provider(s) (%s), API /api/v1/intensity?zone=",
                 address, len(service.stats()), ", ".join(service.stats()))
        try:
            await daemon.until_stopped(hangup)
        finally:
            await daemon.shut_down(background, runner, listener)
        return 0

    return asyncio.run(main())
