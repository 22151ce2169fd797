"""HTTP: ``/metrics`` (the bytes rendered at the last sample), ``/healthz``, ``/readyz`` and a
landing page at ``/``, served by aiohttp. Nothing here touches a sensor."""

from __future__ import annotations

import asyncio
import html
import time
from typing import TYPE_CHECKING, Any, Callable

from aiohttp import web

from . import __version__, endpoint_table
from .exposition import CONTENT_TYPE, OPENMETRICS_TYPE

if TYPE_CHECKING:
    from .sampler import Sampler
    from .webconfig import WebSecurity

SAMPLER = web.AppKey("sampler", object)
PATH = web.AppKey("telemetry_path", str)
TABLE = web.AppKey("endpoint_table", dict)  # the landing page's table, made once per sample


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


def endpoint_table_html(views: tuple) -> str:
    """The node's per-endpoint table (exporter.endpoint_table) from the sampler's last two views
    (``Sampler.table_views``) as an HTML table, every value escaped (label values come from
    command lines and pod names)."""
    prev, cur = views
    if cur is None:
        return "<p>No sample yet.</p>"
    dt = cur[0] - prev[0] if prev is not None else 0.0
    rows = endpoint_table.rows(cur[1], prev[1] if prev is not None else None, dt)
    if not rows:
        return "<p>No endpoint has energy yet.</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in endpoint_table.HEADERS)
    body = []
    for row in rows:
        tds = "".join(f"<td>{html.escape(c)}</td>" for c in endpoint_table.cells(row))
        body.append(f'<tr class="endpoint" data-endpoint="{html.escape(row.endpoint)}">{tds}</tr>')
    return f'<table id="endpoints"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _cached_table(app: web.Application, sampler: "Sampler") -> str:
    """The table of the current sample, made on the first request after it (the page costs the
    sampler nothing, and many page loads cost one table a sample)."""
    cache = app[TABLE]
    views = sampler.table_views
    if cache.get("views") is not views:
        cache["views"], cache["html"] = views, endpoint_table_html(views)
    return cache["html"]


_STYLE = ("body{font-family:system-ui,sans-serif;font-size:14px;margin:1.2em 1.5em;color:#222}table{border-collapse:collapse}"
          "th,td{padding:.3em .45em;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}"
          "th:nth-child(-n+2),td:nth-child(-n+2),th:nth-child(9),td:nth-child(9){text-align:left}th{background:#f3f3f3}"
          ".sim{background:#fff3cd;border:1px solid #e0c060;padding:.5em 1em;display:inline-block}")


async def landing(request: web.Request) -> web.Response:
    sampler: Sampler = request.app[SAMPLER]  # type: ignore[assignment]
    path = html.escape(request.app[PATH])
    gpu = sampler.gpu.status if sampler.gpu is not None else None
    gpu_line = (f"{html.escape(gpu.backend)}: {html.escape(gpu.state)} ({html.escape(gpu.detail)})"
                if gpu else "disabled")
    simulated = ('<p class="sim"><b>SIMULATED</b> GPUs (--gpu.backend=simulated): these numbers come '
                 "from a test double, not from hardware.</p>" if gpu and gpu.backend == "simulated" else "")
    collectors = "".join(f"<li>{html.escape(n)}: {'up' if up else 'DOWN'}</li>"
                         for n, up in sorted(sampler.health.up.items()))
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>Wattprint</title>
<meta http-equiv="refresh" content="{max(2, round(sampler.interval_s * 2))}"><style>{_STYLE}</style></head>
<body><h1>Wattprint {__version__}</h1>
<p>Energy and carbon of AI inference, per model endpoint.</p>{simulated}
<h2>Endpoints</h2>{_cached_table(request.app, sampler)}
<p>Totals since the exporter started; power over the last sample; CO2e/request: operational and
embodied grams over the requests the inference server counted; cleanest region: what the same
energy would have emitted less in the cheapest of carbon.counterfactual_regions.</p>
<ul><li><a href="{path}">Metrics</a></li><li><a href="/healthz">Health</a></li>
<li><a href="/readyz">Readiness</a></li></ul>
<h2>Status</h2><ul><li>samples: {sampler.samples}, interval {sampler.interval_s:g}s</li>
<li>GPU: {gpu_line}</li><li>CPU energy: {html.escape(sampler.cpu_method)}</li>{collectors}</ul>
</body></html>"""
    return web.Response(text=body, content_type="text/html")


class ConnectionCap:
    """At most ``limit`` client connections at once, so that clients cannot exhaust the
    descriptors the sampler needs. At the cap, a new connection takes the place of the oldest one
    that never completed a request (a half-open or slowloris client), else of the served one idle
    the longest (a client holding keep-alive connections open), which is closed; when every open
    connection answered within the last ``IDLE_S``, the new one is closed as soon as it is
    accepted. A real scraper therefore gets in whatever strangers hold: its own connection is the
    most recently active. Both are counted. Wraps the runner's protocol factory
    (aiohttp's public ``runner.server``, its ``connections``, ``request.protocol`` and
    ``RequestHandler.force_close``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.refused = 0
        self.evicted = 0
        self.served: dict[Any, float] = {}  # handler → when it last answered (pruned to the open ones)

    def install(self, app: web.Application) -> None:
        """A connection counts as served once a request head has arrived on it (a middleware run
        before any other, so that one waiting on its first bcrypt check is not taken for a
        half-open one), and again at each response."""
        @web.middleware
        async def started(request: web.Request, handler: Any) -> web.StreamResponse:
            self.served[request.protocol] = time.monotonic()
            return await handler(request)

        async def mark(request: web.BaseRequest, response: web.StreamResponse) -> None:
            self.served[request.protocol] = time.monotonic()
        app.middlewares.insert(0, started)
        app.on_response_prepare.append(mark)

    def factory(self, server: Any) -> Callable[[], asyncio.BaseProtocol]:
        def make() -> asyncio.BaseProtocol:
            conns = server.connections
            if len(self.served) > 2 * self.limit:  # RequestHandler has no weak references
                live = set(conns)
                self.served = {c: t for c, t in self.served.items() if c in live}
            if len(conns) >= self.limit:
                victim = next((c for c in conns if c not in self.served), None)
                if victim is None:
                    idle = min(conns, key=lambda c: self.served.get(c, 0.0))
                    if time.monotonic() - self.served.get(idle, 0.0) < IDLE_S:
                        self.refused += 1
                        return _Refuse()
                    victim = idle
                self.evicted += 1
                transport = victim.transport
                victim.force_close()
                if transport is not None:
                    transport.abort()  # its descriptor freed on the loop's next turn, no flush
            return server()
        return make

    def contribute(self, snap: Any) -> None:
        snap.set("http_connections_refused_total", ("refused",), float(self.refused))
        snap.set("http_connections_refused_total", ("evicted",), float(self.evicted))


IDLE_S = 1.0  # a served connection idle this long may give way to a new one at the cap


class _Refuse(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.abort()  # RST: the descriptor is back before anything is read


# a TLS client that never finishes its handshake is not yet one of aiohttp's connections (the cap
# does not see it): asyncio's 60 s default is cut to this
TLS_HANDSHAKE_TIMEOUT_S = 5.0
ACCEPT_BACKLOG = 32  # asyncio accepts up to this many in one go, before a closed one's descriptor is freed


async def listen(runner: web.AppRunner, host: str, port: int, ssl_context: Any, cap: ConnectionCap,
                 backlog: int = ACCEPT_BACKLOG) -> asyncio.Server:
    """The listening socket, every accepted connection through ``cap``. The backlog is short:
    asyncio accepts up to ``backlog`` connections in one go before the event loop gets to close
    the ones the cap turns away, so it bounds the descriptors a burst of connects can take."""
    loop = asyncio.get_running_loop()
    tls = {"ssl_handshake_timeout": TLS_HANDSHAKE_TIMEOUT_S} if ssl_context is not None else {}
    return await loop.create_server(cap.factory(runner.server), host or None, port, ssl=ssl_context,
                                    backlog=backlog, reuse_address=True, **tls)


def raise_fd_limit() -> tuple[int, int]:
    """The soft RLIMIT_NOFILE raised to the hard limit, as Go programs do at start (systemd's
    soft default is 1024): (before, after)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or want <= soft:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, want


def make_app(sampler: "Sampler", telemetry_path: str = "/metrics",
             security: "WebSecurity | None" = None, cap: ConnectionCap | None = None) -> web.Application:
    """``security`` (exporter.webconfig): basic auth, headers and rate limit on every path."""
    app = hardened_app({telemetry_path: metrics, "/healthz": healthz, "/readyz": readyz, "/": landing},
                       security, cap)
    app[SAMPLER] = sampler
    app[PATH] = telemetry_path
    app[TABLE] = {}
    return app


def hardened_app(routes: dict[str, Any], security: "WebSecurity | None" = None,
                 cap: ConnectionCap | None = None) -> web.Application:
    """An app of GET ``routes`` (path → handler) with the body limit, and the web config's basic
    auth, headers and rate limit (``security``) and the connection cap on every path."""
    from .webconfig.limits import CLIENT_MAX_SIZE

    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    if security is not None:
        security.install(app)
    if cap is not None:
        cap.install(app)
    return app
