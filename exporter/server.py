"""HTTP: ``/metrics`` (the bytes rendered at the last sample), ``/healthz``, ``/readyz`` and a
landing page at ``/``, served by aiohttp. Nothing here touches a sensor."""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING

from aiohttp import web

from . import __version__
from .exposition import CONTENT_TYPE, OPENMETRICS_TYPE

if TYPE_CHECKING:
    from .sampler import Sampler
    from .webconfig import WebSecurity

SAMPLER = web.AppKey("sampler", object)
PATH = web.AppKey("telemetry_path", str)


def _quality(header: str, wanted: str, explicit: bool = False) -> float:
    """The q-value ``header`` (an Accept or Accept-Encoding list, RFC 9110 §12.4.2) gives
    ``wanted``: its own entry, else (unless ``explicit``) a wildcard's (``*`` or ``type/*``),
    else 0."""
    best, specific = 0.0, -1
    major = wanted.split("/", 1)[0] + "/*"
    for item in header.split(","):
        token, *params = item.strip().split(";")
        token = token.strip().lower()
        rank = 2 if token == wanted else 1 if token in (major, "*", "*/*") else -1
        if rank < 0 or rank < specific:
            continue
        q = 1.0
        for param in params:
            key, _, val = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = min(1.0, max(0.0, float(val)))
                except ValueError:
                    q = 0.0
        if rank > specific or q > best:
            best, specific = q, rank
    return 0.0 if explicit and specific < 2 else best


async def metrics(request: web.Request) -> web.Response:
    sampler: Sampler = request.app[SAMPLER]  # type: ignore[assignment]
    exp = sampler.exposition()
    if not exp.text:
        return web.Response(status=503, text="no sample yet\n")
    accept = request.headers.get("Accept", "")
    om = _quality(accept, "application/openmetrics-text", explicit=True)  # */* (curl) gets text
    openmetrics = om > 0 and om >= _quality(accept, "text/plain")
    gz = _quality(request.headers.get("Accept-Encoding", ""), "gzip") > 0
    headers = {"Content-Type": OPENMETRICS_TYPE if openmetrics else CONTENT_TYPE,
               "Vary": "Accept, Accept-Encoding"}
    if gz:
        headers["Content-Encoding"] = "gzip"  # compressed once per sample, on first ask
        return web.Response(body=exp.openmetrics_gzip() if openmetrics else exp.gzip(), headers=headers)
    return web.Response(body=exp.openmetrics() if openmetrics else exp.text, headers=headers)


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
