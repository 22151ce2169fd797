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
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import ssl
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import bcrypt
import yaml
from aiohttp import web

from .config import ConfigError

log = logging.getLogger("wattprint.web")

__all__ = ["WebConfigError", "WebConfig", "TLSSettings", "load", "ssl_context", "describe",
           "WebSecurity", "Reloader", "SERVER_LIMITS", "CLIENT_MAX_SIZE", "REALM"]

# --- server limits: pass SERVER_LIMITS to web.AppRunner(...) and CLIENT_MAX_SIZE to Application ---
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
#: ssl_handshake_timeout). 75 s keeps a Prometheus connection alive across a 1 m scrape interval;
#: aiohttp's own default is about an hour.
KEEPALIVE_TIMEOUT_S = 75.0
SERVER_LIMITS: dict[str, Any] = {
    "keepalive_timeout": KEEPALIVE_TIMEOUT_S, "max_line_size": MAX_LINE_SIZE,
    "max_field_size": MAX_FIELD_SIZE, "max_headers": MAX_HEADERS,
}

REALM = "wattprint"
RELOAD_INTERVAL_S = 2.0
AUTH_CACHE_SIZE = 256

_TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                 "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "RequestClientCert": ssl.CERT_OPTIONAL,
                "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                "RequireAnyClientCert": ssl.CERT_REQUIRED, "RequireClientCert": ssl.CERT_REQUIRED,
                "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
# Go's tls.CipherSuites() (the secure ones the toolkit accepts) → OpenSSL names. The TLS 1.3
# suites are accepted and, as in Go, not configurable.
_CIPHERS = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA", "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_AES_128_GCM_SHA256": None, "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
}
_CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1",
           "X25519": "X25519"}
# The toolkit lets only these headers be set, some only to these values.
_HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (), "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"), "X-XSS-Protection": (), "Content-Security-Policy": (),
}
_TOP_KEYS = ("auth_excluded_paths", "basic_auth_users", "http_server_config", "rate_limit",
             "tls_server_config")
_TLS_KEYS = ("cert", "cert_file", "cipher_suites", "client_allowed_sans", "client_auth_type",
             "client_ca", "client_ca_file", "curve_preferences", "key", "key_file", "max_version",
             "min_version", "prefer_server_cipher_suites")
_HTTP_KEYS = ("headers", "http2")
_RATE_KEYS = ("burst", "interval")
_BCRYPT = re.compile(rb"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.S)
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class WebConfigError(ConfigError):
    """The web config file is wrong: names the file, the key and (never a secret) the value."""


@dataclass(frozen=True)
class TLSSettings:
    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)
    cert_file: str | None
    key_file: str | None
    client_auth_type: str = "NoClientCert"
    client_ca_pem: bytes | None = field(default=None, repr=False)
    client_ca_file: str | None = None
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    cipher_suites: tuple[str, ...] = ()
    prefer_server_cipher_suites: bool = True
    curve_preferences: tuple[str, ...] = ()
    client_allowed_sans: tuple[str, ...] | None = None

    @property
    def verify_mode(self) -> ssl.VerifyMode:
        return _CLIENT_AUTH[self.client_auth_type]

    @property
    def client_ca_set(self) -> frozenset[bytes]:
        return _cert_set(self.client_ca_pem or b"")


@dataclass(frozen=True)
class WebConfig:
    """A loaded, validated web config file. ``users`` maps a user name to its bcrypt hash."""

    path: str
    tls: TLSSettings | None = None
    http2: bool = True
    headers: dict[str, str] = field(default_factory=dict)
    users: dict[str, bytes] = field(default_factory=dict, repr=False)
    rate_limit: tuple[float, int] | None = None  # (interval seconds, burst)
    auth_excluded_paths: frozenset[str] = frozenset()  # exact paths served without basic auth
    watched: tuple[str, ...] = ()  # the file and the files it names, for the Reloader


# --- loading ------------------------------------------------------------------------------

class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (Go's UnmarshalStrict does) without echoing values."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, (str, int, float, bool)):
            if key in seen:
                raise WebConfigError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
            seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load(path: str | os.PathLike[str]) -> WebConfig:
    """Read and validate a web config file; raise :class:`WebConfigError` naming key and value.

    Every file it names is read and checked here (the certificate and key load as a pair, the
    client CAs parse, each password hash looks like bcrypt), so a config that loads also serves.
    """
    path = os.fspath(path)
    where = f"--web.config.file {path!r}"

    def fail(msg: str) -> WebConfigError:
        return WebConfigError(f"{where}: {msg}")

    try:
        text = Path(path).read_bytes()
    except OSError as e:
        raise fail(f"cannot read: {e.strerror}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except WebConfigError as e:
        raise fail(str(e)) from None
    except yaml.YAMLError as e:
        # Never str(e): PyYAML quotes the offending line, which may hold a hash or a key.
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise fail(f"not valid YAML{at}: {getattr(e, 'problem', None) or 'syntax error'}") from None
    except RecursionError:
        raise fail("nested too deeply") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise fail(f"the top level must be a mapping, got {type(data).__name__}")
    _known(data, _TOP_KEYS, "", fail)
    base = os.path.dirname(os.path.abspath(path))
    watched = [path]
    tls = _load_tls(_section(data, "tls_server_config", fail), base, fail, watched)
    http = _section(data, "http_server_config", fail)
    _known(http, _HTTP_KEYS, "http_server_config.", fail)
    http2 = http.get("http2", True)
    if not isinstance(http2, bool):
        raise fail(f"http_server_config.http2={http2!r}: must be true or false")
    headers = _load_headers(http.get("headers"), fail)
    users = _load_users(data.get("basic_auth_users"), fail)
    rate = _load_rate(_section(data, "rate_limit", fail), fail)
    excluded = _str_list(data, "auth_excluded_paths", fail, "") or ()
    for p in excluded:
        if not p.startswith("/"):
            raise fail(f"auth_excluded_paths: {p!r} is not a path (it must start with '/'; "
                       "paths match exactly)")
    return WebConfig(path=path, tls=tls, http2=http2, headers=headers, users=users,
                     rate_limit=rate, auth_excluded_paths=frozenset(excluded),
                     watched=tuple(watched))


def _section(data: dict, name: str, fail: Callable[[str], WebConfigError]) -> dict:
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(f"{name}: must be a mapping, got {type(value).__name__}")
    return value


def _known(data: dict, allowed: tuple[str, ...], prefix: str,
           fail: Callable[[str], WebConfigError]) -> None:
    for key in data:
        if key not in allowed:
            raise fail(f"{prefix}{key}: unknown key; allowed here: {', '.join(allowed)}")


def _str(section: dict, key: str, fail: Callable[[str], WebConfigError], prefix: str,
         secret: bool = False) -> str | None:
    v = section.get(key)
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        shown = "(hidden)" if secret else repr(v)
        raise fail(f"{prefix}{key}={shown}: must be a string, got {type(v).__name__}")
    return v


def _str_list(section: dict, key: str, fail: Callable[[str], WebConfigError],
              prefix: str) -> tuple[str, ...] | None:
    v = section.get(key)
    if v is None:
        return None
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise fail(f"{prefix}{key}={v!r}: must be a list of strings")
    return tuple(v)


def _read(base: str, name: str, key: str, fail: Callable[[str], WebConfigError],
          watched: list[str]) -> tuple[str, bytes]:
    p = name if os.path.isabs(name) else os.path.join(base, name)
    try:
        data = Path(p).read_bytes()
    except OSError as e:
        raise fail(f"tls_server_config.{key}={name!r}: cannot read {p!r}: {e.strerror}") from None
    watched.append(p)
    return p, data


def _load_tls(sec: dict, base: str, fail: Callable[[str], WebConfigError],
              watched: list[str]) -> TLSSettings | None:
    if not sec:
        return None
    P = "tls_server_config."
    _known(sec, _TLS_KEYS, P, fail)
    cert_file, cert_inline = _str(sec, "cert_file", fail, P), _str(sec, "cert", fail, P)
    key_file, key_inline = _str(sec, "key_file", fail, P), _str(sec, "key", fail, P, secret=True)
    ca_file, ca_inline = _str(sec, "client_ca_file", fail, P), _str(sec, "client_ca", fail, P)
    for a, b, x, y in (("cert", "cert_file", cert_inline, cert_file),
                       ("key", "key_file", key_inline, key_file),
                       ("client_ca", "client_ca_file", ca_inline, ca_file)):
        if x is not None and y is not None:
            raise fail(f"{P}{a} and {P}{b}: set one of them, not both")
    if cert_file is None and cert_inline is None:
        raise fail(f"{P}cert_file: missing (TLS needs cert_file and key_file, or inline cert and key)")
    if key_file is None and key_inline is None:
        raise fail(f"{P}key_file: missing (TLS needs cert_file and key_file, or inline cert and key)")
    cert_path = key_path = ca_path = None
    if cert_file is not None:
        cert_path, cert_pem = _read(base, cert_file, "cert_file", fail, watched)
    else:
        cert_pem = cert_inline.encode()  # type: ignore[union-attr]
    if key_file is not None:
        key_path, key_pem = _read(base, key_file, "key_file", fail, watched)
    else:
        key_pem = key_inline.encode()  # type: ignore[union-attr]
    ca_pem: bytes | None = None
    if ca_file is not None:
        ca_path, ca_pem = _read(base, ca_file, "client_ca_file", fail, watched)
    elif ca_inline is not None:
        ca_pem = ca_inline.encode()

    auth = _str(sec, "client_auth_type", fail, P) or "NoClientCert"
    if auth not in _CLIENT_AUTH:
        raise fail(f"{P}client_auth_type={auth!r}: use one of "
                   + ", ".join(k for k in _CLIENT_AUTH if k != "RequireClientCert"))
    if ca_pem is not None and auth == "NoClientCert":
        raise fail(f"{P}client_ca_file is set but client_auth_type is NoClientCert: set "
                   "client_auth_type (RequireAndVerifyClientCert to require client certificates)")
    if ca_pem is None and auth != "NoClientCert":
        raise fail(f"{P}client_auth_type={auth!r} needs client_ca_file: Wattprint verifies every "
                   "client certificate it asks for against it")
    versions = {}
    for key, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        v = sec.get(key, default)
        if not isinstance(v, str) or v not in _TLS_VERSIONS:
            raise fail(f"{P}{key}={v!r}: use one of {', '.join(_TLS_VERSIONS)}")
        versions[key] = v
    if _TLS_VERSIONS[versions["min_version"]] > _TLS_VERSIONS[versions["max_version"]]:
        raise fail(f"{P}min_version={versions['min_version']!r} is above "
                   f"max_version={versions['max_version']!r}")
    ciphers = _str_list(sec, "cipher_suites", fail, P) or ()
    for c in ciphers:
        if c not in _CIPHERS:
            raise fail(f"{P}cipher_suites: unknown cipher {c!r}; use Go names such as "
                       "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256")
    curves = _str_list(sec, "curve_preferences", fail, P) or ()
    for c in curves:
        if c not in _CURVES:
            raise fail(f"{P}curve_preferences: unknown curve {c!r}; use one of {', '.join(_CURVES)}")
    prefer = sec.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        raise fail(f"{P}prefer_server_cipher_suites={prefer!r}: must be true or false")
    sans = _str_list(sec, "client_allowed_sans", fail, P)
    if sans is not None and _CLIENT_AUTH[auth] != ssl.CERT_REQUIRED:
        raise fail(f"{P}client_allowed_sans needs client_auth_type RequireAnyClientCert or "
                   f"RequireAndVerifyClientCert, not {auth!r}")
    tls = TLSSettings(cert_pem=cert_pem, key_pem=key_pem, cert_file=cert_path, key_file=key_path,
                      client_auth_type=auth, client_ca_pem=ca_pem, client_ca_file=ca_path,
                      min_version=versions["min_version"], max_version=versions["max_version"],
                      cipher_suites=ciphers, prefer_server_cipher_suites=prefer,
                      curve_preferences=curves,
                      client_allowed_sans=tuple(_norm_san(s) for s in sans) if sans is not None else None)
    _build_context(tls, fail)  # the files parse and the pair matches, or fail here
    return tls


def _load_headers(raw: Any, fail: Callable[[str], WebConfigError]) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise fail(f"http_server_config.headers: must be a mapping, got {type(raw).__name__}")
    out = {}
    for k, v in raw.items():
        if k not in _HEADERS:
            raise fail(f"http_server_config.headers.{k}: this header can not be configured; "
                       f"allowed: {', '.join(_HEADERS)}")
        if v is None or v == "":
            continue  # the toolkit: unset if blank
        if not isinstance(v, str) or any(ch in v for ch in "\r\n\0"):
            raise fail(f"http_server_config.headers.{k}={v!r}: must be a one-line string")
        if _HEADERS[k] and v not in _HEADERS[k]:
            raise fail(f"http_server_config.headers.{k}={v!r}: use one of {', '.join(_HEADERS[k])}")
        out[k] = v
    return out


def _load_users(raw: Any, fail: Callable[[str], WebConfigError]) -> dict[str, bytes]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise fail(f"basic_auth_users: must be a mapping of user name to bcrypt hash, got "
                   f"{type(raw).__name__}")
    out = {}
    for user, h in raw.items():
        if not isinstance(user, str) or not user:
            raise fail(f"basic_auth_users: user name {user!r} must be a non-empty string")
        if ":" in user:
            raise fail(f"basic_auth_users.{user}: a user name can not contain ':' (basic auth "
                       "splits on it)")
        if not isinstance(h, str):
            raise fail(f"basic_auth_users.{user}: the password hash must be a string, got "
                       f"{type(h).__name__}")
        hb = h.strip().encode()
        m = _BCRYPT.match(hb)
        if not m or not 4 <= int(m.group(1)) <= 31:
            raise fail(f"basic_auth_users.{user}: not a bcrypt hash (expected $2a$, $2b$ or $2y$, "
                       "a cost 04..31 and 53 more characters; make one with "
                       "`htpasswd -nBC 12 \"\" | tr -d ':\\n'`)")
        out[user] = hb
    return out


def _load_rate(sec: dict, fail: Callable[[str], WebConfigError]) -> tuple[float, int] | None:
    if not sec:
        return None
    _known(sec, _RATE_KEYS, "rate_limit.", fail)
    interval = _go_duration(sec.get("interval", 0), "rate_limit.interval", fail)
    if interval == 0:
        return None  # the toolkit: 0 disables the limiter
    burst = sec.get("burst", 0)
    if not isinstance(burst, int) or isinstance(burst, bool) or burst < 1:
        raise fail(f"rate_limit.burst={burst!r}: must be a whole number >= 1 when "
                   "rate_limit.interval is set (0 would refuse every request)")
    return interval, burst


def _go_duration(v: Any, key: str, fail: Callable[[str], WebConfigError]) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0:
        return 0.0
    s = str(v).strip() if isinstance(v, str) else None
    if s and re.fullmatch(f"(?:{_GO_DURATION.pattern})+", s):
        return sum(float(n) * _GO_UNITS[u] for n, u in _GO_DURATION.findall(s))
    raise fail(f"{key}={v!r}: not a duration (use e.g. 100ms, 1s, 1m30s)")


def _norm_san(s: str) -> str:
    try:
        return str(ipaddress.ip_address(s))
    except ValueError:
        return s


def _cert_set(pem: bytes) -> frozenset[bytes]:
    return frozenset(b"".join(m.split()) for m in _PEM_CERT.findall(pem))


# --- SSL contexts -------------------------------------------------------------------------

@contextlib.contextmanager
def _pem_path(data: bytes) -> Iterator[str]:
    """A path holding ``data`` for ``load_cert_chain`` (which takes only paths): an anonymous
    in-memory file where Linux has one, else a 0600 file in a private temporary directory. Loading
    from these bytes, not the named file, makes what was validated exactly what is served."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("wattprint-pem", os.MFD_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="wattprint-") as d:
        p = os.path.join(d, "pem")
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        yield p


class _EncryptedKey(Exception):
    pass


def _no_password() -> str:
    raise _EncryptedKey  # never prompt on a terminal for a key passphrase


def _load_pair(ctx: ssl.SSLContext, tls: TLSSettings) -> None:
    with _pem_path(tls.cert_pem) as cp, _pem_path(tls.key_pem) as kp:
        ctx.load_cert_chain(cp, kp, password=_no_password)


def _describe_file(tls: TLSSettings, which: str) -> str:
    name = tls.cert_file if which == "cert" else tls.key_file
    return f"{which}_file {name!r}" if name else f"inline {which}"


def _build_context(tls: TLSSettings, fail: Callable[[str], WebConfigError]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    P = "tls_server_config."
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:  # parses the certificates alone, so a broken cert is told apart from a broken key
        if not _cert_set(tls.cert_pem):
            raise ssl.SSLError("no certificate")
        probe.load_verify_locations(cadata=tls.cert_pem.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError):
        raise fail(f"{P}{_describe_file(tls, 'cert')}: not a PEM certificate") from None
    try:
        _load_pair(ctx, tls)
    except _EncryptedKey:
        raise fail(f"{P}{_describe_file(tls, 'key')}: the key is encrypted; give an unencrypted "
                   "PEM key (restrict the file's permissions instead)") from None
    except ssl.SSLError as e:
        if e.reason == "KEY_VALUES_MISMATCH":
            why = "does not match the certificate"
        else:
            why = f"is not a PEM private key for the certificate ({e.reason or e.library or 'unreadable'})"
        raise fail(f"{P}{_describe_file(tls, 'key')} {why} in {_describe_file(tls, 'cert')}") from None
    if tls.client_ca_pem is not None:
        what = f"client_ca_file {tls.client_ca_file!r}" if tls.client_ca_file else "inline client_ca"
        try:
            if not tls.client_ca_set:
                raise ssl.SSLError("no certificate")
            ctx.load_verify_locations(cadata=tls.client_ca_pem.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError):
            raise fail(f"{P}{what}: contains no PEM certificate that loads") from None
    try:
        _apply_settings(ctx, tls, initial=True)
    except ssl.SSLError as e:
        raise fail(f"{P}cipher_suites/curve_preferences: OpenSSL refused them ({e.reason})") from None
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _default_ciphers() -> str:
    return ":".join(c["name"] for c in ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).get_ciphers()
                    if c.get("protocol") != "TLSv1.3")


def _apply_settings(ctx: ssl.SSLContext, tls: TLSSettings, initial: bool = False) -> None:
    """Versions, ciphers, client auth: settable on a live context (they apply to new handshakes)."""
    ctx.minimum_version = _TLS_VERSIONS[tls.min_version]
    ctx.maximum_version = _TLS_VERSIONS[tls.max_version]
    names = [_CIPHERS[c] for c in tls.cipher_suites if _CIPHERS[c]]
    if names:
        ctx.set_ciphers(":".join(names))
    elif tls.cipher_suites or not initial:
        ctx.set_ciphers(_default_ciphers())
    if tls.prefer_server_cipher_suites:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if initial and len(tls.curve_preferences) == 1:
        ctx.set_ecdh_curve(_CURVES[tls.curve_preferences[0]])
    ctx.verify_mode = tls.verify_mode


def ssl_context(cfg: WebConfig) -> ssl.SSLContext | None:
    """The server SSLContext for ``cfg``, or None when the file configures no TLS. Pass it to
    ``web.TCPSite(..., ssl_context=...)``; :class:`WebSecurity` keeps it current on reload."""
    if cfg.tls is None:
        return None

    def fail(msg: str) -> WebConfigError:
        return WebConfigError(f"--web.config.file {cfg.path!r}: {msg}")

    return _build_context(cfg.tls, fail)


def describe(cfg: WebConfig) -> str:
    """One secret-free line for the startup log."""
    parts = []
    if cfg.tls is None:
        parts.append("TLS off")
    else:
        t = cfg.tls
        parts.append(f"TLS {t.min_version}..{t.max_version}, client certificates: {t.client_auth_type}")
    parts.append(f"basic auth: {len(cfg.users)} user(s)" if cfg.users else "basic auth off")
    if cfg.users and cfg.auth_excluded_paths:
        parts.append("open without auth: " + ", ".join(sorted(cfg.auth_excluded_paths)))
    if cfg.headers:
        parts.append("headers: " + ", ".join(sorted(cfg.headers)))
    if cfg.rate_limit:
        parts.append(f"rate limit: 1 per {cfg.rate_limit[0]:g}s, burst {cfg.rate_limit[1]}")
    return "; ".join(parts)


# --- the live state: middleware, headers, reload ------------------------------------------

class _Bucket:
    """Token bucket, as Go's rate.Limiter(rate.Every(interval), burst): starts full."""

    def __init__(self, interval_s: float, burst: int) -> None:
        self.interval_s, self.burst = interval_s, burst
        self.tokens, self.t = float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.t) / self.interval_s)
        self.t = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # over 72 bytes, or a hash bcrypt refuses
        return False


def _parse_basic(header: str | None) -> tuple[bytes, bytes] | None:
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(rest.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = raw.partition(b":")
    return (user, password) if sep else None


def _peer_sans(peercert: dict | None) -> set[str]:
    out = set()
    for kind, value in (peercert or {}).get("subjectAltName", ()):
        out.add(_norm_san(value.strip()) if kind == "IP Address" else value)
    return out


class WebSecurity:
    """The configuration in force: its SSLContext, the auth middleware, the response headers.

    ``install(app)`` adds the middleware and the header hook to an aiohttp app (before it starts);
    ``ssl`` is the context for ``TCPSite``; ``apply(new)`` swaps in a reloaded file.
    """

    def __init__(self, cfg: WebConfig, ssl_ctx: ssl.SSLContext | None = None,
                 cache_size: int = AUTH_CACHE_SIZE) -> None:
        self._cfg = cfg
        self.ssl = ssl_ctx if ssl_ctx is not None else ssl_context(cfg)
        self._loaded_cas = cfg.tls.client_ca_set if cfg.tls is not None else frozenset()
        self._bucket = _Bucket(*cfg.rate_limit) if cfg.rate_limit else None
        # Verified logins: (user, its bcrypt hash) → HMAC-SHA256 of the credentials under a key
        # drawn at start. No plaintext is kept, and a memory dump gives no fast offline guess.
        self._cache: OrderedDict[tuple[str, bytes], bytes] = OrderedDict()
        self._cache_size = cache_size
        self._hmac_key = secrets.token_bytes(32)
        self._bcrypt_lock = asyncio.Lock()  # one bcrypt at a time: one core at most, as the toolkit
        self._decoys: dict[int, bytes] = {}
        self.stats = {"cache_hits": 0, "bcrypt_checks": 0, "denied": 0, "rate_limited": 0}

    @property
    def config(self) -> WebConfig:
        return self._cfg

    def install(self, app: web.Application) -> None:
        app.middlewares.append(self.middleware)
        app.on_response_prepare.append(self._add_headers)

    # -- reload --
    def apply(self, new: WebConfig) -> None:
        """Put ``new`` in force for new connections and requests, all or nothing. Raises
        WebConfigError (and changes nothing) when ``new`` needs a restart."""
        old = self._cfg
        if (old.tls is None) != (new.tls is None) or (new.tls is not None and self.ssl is None):
            raise WebConfigError(f"--web.config.file {new.path!r}: switching TLS "
                                 f"{'on' if new.tls else 'off'} needs a restart")
        if old.tls is not None and new.tls is not None and self.ssl is not None:
            o, n = old.tls, new.tls
            if o.curve_preferences != n.curve_preferences:
                raise WebConfigError(f"--web.config.file {new.path!r}: changing "
                                     "tls_server_config.curve_preferences needs a restart")
            # A live context can add client CAs but never drop one: verifying clients again
            # needs every CA it holds to still be wanted.
            if n.verify_mode != ssl.CERT_NONE and not self._loaded_cas <= n.client_ca_set:
                raise WebConfigError(f"--web.config.file {new.path!r}: a client CA was removed; "
                                     "restart Wattprint to stop trusting it (still trusted now)")
            try:
                _load_pair(self.ssl, n)
                if n.client_ca_pem and not n.client_ca_set <= self._loaded_cas:
                    self.ssl.load_verify_locations(cadata=n.client_ca_pem.decode("ascii", "replace"))
                    self._loaded_cas = self._loaded_cas | n.client_ca_set
                _apply_settings(self.ssl, n)
            except (ssl.SSLError, ValueError, _EncryptedKey) as e:
                with contextlib.suppress(Exception):  # put the old pair and settings back
                    _load_pair(self.ssl, o)
                    _apply_settings(self.ssl, o)
                reason = getattr(e, "reason", None) or type(e).__name__
                raise WebConfigError(f"--web.config.file {new.path!r}: the new TLS settings did "
                                     f"not load ({reason})") from None
        if new.rate_limit != old.rate_limit:
            self._bucket = _Bucket(*new.rate_limit) if new.rate_limit else None
        self._cfg = new
        for slot in [s for s in self._cache if new.users.get(s[0]) != s[1]]:
            del self._cache[slot]  # users removed or given a new password must log in again

    # -- requests --
    async def _add_headers(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        for k, v in self._cfg.headers.items():
            response.headers[k] = v

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        cfg = self._cfg  # one config per request, even if a reload lands meanwhile
        if self._bucket is not None and not self._bucket.take():
            self.stats["rate_limited"] += 1
            return web.Response(status=429, text="Too Many Requests\n")
        if request.path in cfg.auth_excluded_paths:
            return await handler(request)
        if cfg.tls is not None and cfg.tls.client_allowed_sans is not None:
            peer = request.transport.get_extra_info("peercert") if request.transport else None
            if not _peer_sans(peer) & set(cfg.tls.client_allowed_sans):
                self.stats["denied"] += 1
                resp = web.Response(status=403, text="client certificate not allowed\n")
                resp.force_close()
                return resp
        if cfg.users and not await self.authorized(cfg, request.headers.get("Authorization")):
            self.stats["denied"] += 1
            return web.Response(status=401, text="Unauthorized\n",
                                headers={"WWW-Authenticate": f'Basic realm="{REALM}"'})
        return await handler(request)

    async def authorized(self, cfg: WebConfig, header: str | None) -> bool:
        creds = _parse_basic(header)
        if creds is None:
            return False
        user_b, password = creds
        user = user_b.decode("utf-8", "surrogateescape")
        hashed = cfg.users.get(user)
        slot = (user, hashed) if hashed is not None else None
        proof = hmac.new(self._hmac_key, b"\0".join((user_b, hashed or b"", password)),
                         hashlib.sha256).digest()
        if slot is not None:
            cached = self._cache.get(slot)
            if cached is not None and hmac.compare_digest(cached, proof):
                self._cache.move_to_end(slot)
                self.stats["cache_hits"] += 1
                return True
        # Unknown users are checked against a decoy hash of the highest cost in use, so that the
        # answer takes as long as for a known user and does not tell which users exist.
        target = hashed if hashed is not None else await self._decoy(cfg)
        async with self._bcrypt_lock:
            self.stats["bcrypt_checks"] += 1
            ok = await asyncio.to_thread(_checkpw, password, target)
        if not (ok and slot is not None):
            return False
        if self._cfg is cfg:  # not a login against a config replaced meanwhile
            self._cache[slot] = proof
            self._cache.move_to_end(slot)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return True

    async def _decoy(self, cfg: WebConfig) -> bytes:
        cost = max(int(h[4:6]) for h in cfg.users.values())
        if cost not in self._decoys:
            self._decoys[cost] = await asyncio.to_thread(
                bcrypt.hashpw, secrets.token_bytes(16).hex().encode(), bcrypt.gensalt(cost))
        return self._decoys[cost]


class Reloader:
    """Polls the web config file and the files it names (inode, mtime, size, every ``interval_s``)
    and applies a changed set once it has been stable for one poll (so a certificate and its key
    copied one after the other load together). A file that fails to load or apply is logged,
    without secrets, and the configuration in force stays."""

    def __init__(self, security: WebSecurity, interval_s: float = RELOAD_INTERVAL_S) -> None:
        self.security = security
        self.interval_s = interval_s
        self._applied = self._signature()
        self._pending: tuple | None = None
        self._task: asyncio.Task | None = None
        self.reloads = 0
        self.failures = 0

    def _signature(self) -> tuple:
        sig = []
        for p in self.security.config.watched:
            try:
                st = os.stat(p)
                sig.append((p, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError:
                sig.append((p, None))
        return tuple(sig)

    def check(self) -> bool | None:
        """One poll: True when a new file was applied, False when one failed, None otherwise."""
        now = self._signature()
        if now == self._applied:
            self._pending = None
            return None
        if now != self._pending:
            self._pending = now  # changed since the last poll: wait until it holds still
            return None
        return self.reload_now()

    def reload_now(self) -> bool:
        """Load and apply the file now (e.g. on SIGHUP)."""
        path = self.security.config.path
        self._pending = None
        try:
            new = load(path)
            self.security.apply(new)
        except WebConfigError as e:  # worded without secrets by construction
            self._applied = self._signature()  # log once per change, not every poll
            self.failures += 1
            log.error("web config not reloaded, the previous one stays in force: %s", e)
            return False
        self._applied = self._signature()
        self.reloads += 1
        log.info("web config %s reloaded: %s", path, describe(new))
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.check()
            except Exception:  # never let the watcher die on a surprise
                log.exception("web config watcher")

    def start(self) -> asyncio.Task:
        self._task = asyncio.create_task(self.run(), name="webconfig-reloader")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
