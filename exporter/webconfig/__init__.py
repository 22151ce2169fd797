"""``--web.config.file``: TLS, client certificates, basic auth and response headers for the HTTP
server, in the Prometheus exporter-toolkit format (docs/web-configuration.md of
github.com/prometheus/exporter-toolkit), so one file serves node_exporter and Wattprint alike::

    tls_server_config:
      cert_file: server.crt            # relative paths are relative to this file
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: clients-ca.crt
      min_version: TLS13
    http_server_config:
      headers: {X-Content-Type-Options: nosniff}
    basic_auth_users:
      prometheus: $2b$12$...           # bcrypt: htpasswd -nBC 12 "" | tr -d ':\\n'
    rate_limit: {interval: 100ms, burst: 20}

What it protects: everything, as the toolkit does: basic auth applies to ``/metrics``, ``/``,
``/healthz`` and ``/readyz`` alike, unless the file lists exact paths to leave open, with the key
some toolkit versions read (the kubelet's probes carry no credentials)::

    auth_excluded_paths: [/healthz, /readyz]

Client certificates are checked during the TLS handshake, before any path is known, so
``auth_excluded_paths`` cannot open a path to clients without one: with client certificates
required, use ``tcpSocket`` probes.

Differences from the Go toolkit, all forced by Python's ``ssl`` module:

* ``RequestClientCert`` and ``RequireAnyClientCert`` verify the certificate a client presents (Go
  accepts any certificate); every client auth type but ``NoClientCert`` therefore needs
  ``client_ca_file`` (or inline ``client_ca``).
* ``client_allowed_sans`` is checked per request (403) rather than during the handshake.
* ``curve_preferences``: one curve restricts the handshake to it; several keep OpenSSL's default
  groups (which include all four toolkit curves) in OpenSSL's order.
* ``http2`` is accepted and ignored: aiohttp serves HTTP/1.1 only (ALPN offers ``http/1.1``).

Secrets never appear in errors or logs: neither a password hash, nor an inline key, nor key bytes.

Reloading: :class:`Reloader` polls the file and the files it names every 2 s. Certificates, key,
users, headers, versions, ciphers, client auth and added client CAs apply to new connections
without closing the listener (``load_cert_chain`` on the live ``SSLContext``); a file that does
not load, or that needs a restart (TLS switched on or off, a client CA removed, another curve),
is logged and the previous configuration stays in force.

Modules (this package loads each one on first use, so that importing :mod:`.limits` alone stays
light):

* :mod:`.limits`: the HTTP server limits (``SERVER_LIMITS``, ``CLIENT_MAX_SIZE``, ...); imports
  neither ``ssl``, ``bcrypt``, ``yaml`` nor aiohttp.
* :mod:`.tls`: :class:`TLSSettings`, the toolkit-to-OpenSSL tables, building and updating the
  server ``SSLContext``.
* :mod:`.model`: :class:`WebConfig`, :class:`WebConfigError`, strict YAML, :func:`load` and its
  validation, :func:`ssl_context`, :func:`describe`.
* :mod:`.auth`: :class:`WebSecurity`, the middleware: rate limit, client SANs, basic auth with
  bcrypt and its cache, response headers, applying a reloaded file.
* :mod:`.reload`: :class:`Reloader`, the file watcher.

Each imports only those above it in this list (``model`` also imports :mod:`exporter.config`).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["WebConfigError", "WebConfig", "TLSSettings", "load", "ssl_context", "describe",
           "WebSecurity", "Reloader", "SERVER_LIMITS", "CLIENT_MAX_SIZE", "REALM"]

# Every public name of the package → the submodule that defines it.
_EXPORTS = {
    **dict.fromkeys(("MAX_LINE_SIZE", "MAX_FIELD_SIZE", "MAX_HEADERS", "CLIENT_MAX_SIZE",
                     "KEEPALIVE_TIMEOUT_S", "SERVER_LIMITS"), "limits"),
    "TLSSettings": "tls",
    **dict.fromkeys(("WebConfigError", "WebConfig", "load", "ssl_context", "describe"), "model"),
    **dict.fromkeys(("REALM", "AUTH_CACHE_SIZE", "WebSecurity"), "auth"),
    **dict.fromkeys(("RELOAD_INTERVAL_S", "Reloader"), "reload"),
}


def __getattr__(name: str) -> Any:  # PEP 562: import the submodule on first use
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
