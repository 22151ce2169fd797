"""HTTP server limits for the aiohttp server: pass :data:`SERVER_LIMITS` to
``web.AppRunner(...)`` and :data:`CLIENT_MAX_SIZE` to ``web.Application(...)``.

Plain constants, kept apart from the rest of :mod:`exporter.webconfig` so that the server can read
them without loading ``bcrypt``, ``ssl``, ``yaml`` or aiohttp: this module imports nothing heavy.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_LINE_SIZE", "MAX_FIELD_SIZE", "MAX_HEADERS", "CLIENT_MAX_SIZE",
           "KEEPALIVE_TIMEOUT_S", "SERVER_LIMITS", "MAX_CONNECTIONS", "RESERVED_FDS"]

#: A scrape is a small GET: a 4 KiB request line and 64 headers of at most 8 KiB each is plenty
#: (aiohttp answers 400 beyond that).
MAX_LINE_SIZE = 4096
MAX_FIELD_SIZE = 8190
MAX_HEADERS = 64
#: Largest request body accepted (aiohttp answers 413); nothing here takes a body.
CLIENT_MAX_SIZE = 64 * 1024
#: Idle keep-alive limit. aiohttp (3.10+) arms this timer when a connection opens and after each
#: response, and closes the connection if no complete request head arrived by then: it is the
#: server's only bound on a slowloris client trickling headers (aiohttp has no separate
#: per-request read timeout; the TLS handshake is bounded by asyncio's 60 s
#: ssl_handshake_timeout). 15 s: a half-open connection holds a descriptor that long at most;
#: a Prometheus scraping less often than that opens a new connection per scrape (aiohttp's own
#: default is about an hour).
KEEPALIVE_TIMEOUT_S = 15.0  # also the time a new connection has to send its first request head
#: Connections held at once; beyond, a new one is closed at once (and counted), so that clients
#: can never take the descriptors the sampler and the engine scraper need.
MAX_CONNECTIONS = 256
#: Descriptors kept for everything but clients (procfs reads, NVML, engine scrapes, providers).
RESERVED_FDS = 128
SERVER_LIMITS: dict[str, Any] = {
    "keepalive_timeout": KEEPALIVE_TIMEOUT_S, "max_line_size": MAX_LINE_SIZE,
    "max_field_size": MAX_FIELD_SIZE, "max_headers": MAX_HEADERS,
}
