"""HTTP: ``/metrics`` (the bytes rendered at the last sample), ``/healthz``, ``/readyz`` and a
landing page at ``/``, served by aiohttp. Nothing here touches a sensor."""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING

from aiohttp import web

from . import __version__
from .exposition import CONTENT_TYPE

if TYPE_CHECKING:
    from .sampler import Sampler
    from .webconfig import WebSecurity

SAMPLER = web.AppKey("sampler", object)
PATH = web.AppKey("telemetry_path", str)


async def metrics(request: web.Request) -> web.Response:
    sampler: Sampler = request.app[SAMPLER]  # type: ignore[assignment]
    exp = sampler.exposition()
    if not exp.text:
        return web.Response(status=503, text="no sample yet\n")
    headers = {"Content-Type": CONTENT_TYPE}
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=exp.gzip(), headers=headers)  # compressed once per sample, on first ask
    return web.Response(body=exp.text, headers=headers)


async def healthz(request: web.Request) -> web.Response:
    """Live while the sampling loop is turning: the last sample is at most 3 intervals old."""
    sampler: Sampler = request.app[SAMPLER]  # type: ignore[assignment]
    age = time.monotonic() - sampler.last_mono if sampler.last_mono else 0.0  # immune to NTP steps
    limit = 3 * sampler.interval_s + 5
    if sampler.last_mono and age > limit:
        return web.Response(status=503, text=f"sampling loop stalled: last sample {age:.1f}s ago\n")
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    sampler: Sampler = request.app[SAMPLER]  # type: ignore[assignment]
    if not sampler.ready.is_set():
        return web.Response(status=503, text="waiting for the first sample\n")
    return web.Response(text="ready\n")


async def landing(request: web.Request) -> web.Response:
    sampler: Sampler = request.app[SAMPLER]  # type: ignore[assignment]
    path = html.escape(request.app[PATH])
    gpu = sampler.gpu.status if sampler.gpu is not None else None
    gpu_line = (f"{gpu.backend}: {gpu.state} ({html.escape(gpu.detail)})" if gpu else "disabled")
    collectors = "".join(f"<li>{html.escape(n)}: {'up' if up else 'DOWN'}</li>"
                         for n, up in sorted(sampler.health.up.items()))
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>Wattprint</title></head>
<body><h1>Wattprint {__version__}</h1>
<p>Energy and carbon of AI inference, per model endpoint.</p>
<ul><li><a href="{path}">Metrics</a></li><li><a href="/healthz">Health</a></li>
<li><a href="/readyz">Readiness</a></li></ul>
<h2>Status</h2><ul><li>samples: {sampler.samples}, interval {sampler.interval_s:g}s</li>
<li>GPU: {gpu_line}</li><li>CPU energy: {sampler.cpu_method}</li>{collectors}</ul>
</body></html>"""
    return web.Response(text=body, content_type="text/html")


def make_app(sampler: "Sampler", telemetry_path: str = "/metrics",
             security: "WebSecurity | None" = None) -> web.Application:
    """``security`` (exporter.webconfig): basic auth, headers and rate limit on every path."""
    from .webconfig.limits import CLIENT_MAX_SIZE

    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    app[SAMPLER] = sampler
    app[PATH] = telemetry_path
    app.router.add_get(telemetry_path, metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/", landing)
    if security is not None:
        security.install(app)
    return app
