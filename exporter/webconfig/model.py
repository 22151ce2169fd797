"""The web config file: :class:`WebConfig` and :class:`WebConfigError`, strict YAML loading
(duplicate keys refused, no value echoed), :func:`load` and its validation of every key, Go
durations, :func:`ssl_context` for a loaded file and :func:`describe` for the startup log.
"""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from ..config import ConfigError
from .tls import CIPHERS, CLIENT_AUTH, CURVES, TLS_VERSIONS, TLSSettings, build_context, norm_san

__all__ = ["WebConfigError", "WebConfig", "TLSSettings", "load", "ssl_context", "describe"]

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
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class WebConfigError(ConfigError):
    """The web config file is wrong: names the file, the key and (never a secret) the value."""


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
    if auth not in CLIENT_AUTH:
        raise fail(f"{P}client_auth_type={auth!r}: use one of "
                   + ", ".join(k for k in CLIENT_AUTH if k != "RequireClientCert"))
    if ca_pem is not None and auth == "NoClientCert":
        raise fail(f"{P}client_ca_file is set but client_auth_type is NoClientCert: set "
                   "client_auth_type (RequireAndVerifyClientCert to require client certificates)")
    if ca_pem is None and auth != "NoClientCert":
        raise fail(f"{P}client_auth_type={auth!r} needs client_ca_file: Wattprint verifies every "
                   "client certificate it asks for against it")
    versions = {}
    for key, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        v = sec.get(key, default)
        if not isinstance(v, str) or v not in TLS_VERSIONS:
            raise fail(f"{P}{key}={v!r}: use one of {', '.join(TLS_VERSIONS)}")
        versions[key] = v
    if TLS_VERSIONS[versions["min_version"]] > TLS_VERSIONS[versions["max_version"]]:
        raise fail(f"{P}min_version={versions['min_version']!r} is above "
                   f"max_version={versions['max_version']!r}")
    ciphers = _str_list(sec, "cipher_suites", fail, P) or ()
    for c in ciphers:
        if c not in CIPHERS:
            raise fail(f"{P}cipher_suites: unknown cipher {c!r}; use Go names such as "
                       "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256")
    curves = _str_list(sec, "curve_preferences", fail, P) or ()
    for c in curves:
        if c not in CURVES:
            raise fail(f"{P}curve_preferences: unknown curve {c!r}; use one of {', '.join(CURVES)}")
    prefer = sec.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        raise fail(f"{P}prefer_server_cipher_suites={prefer!r}: must be true or false")
    sans = _str_list(sec, "client_allowed_sans", fail, P)
    if sans is not None and CLIENT_AUTH[auth] != ssl.CERT_REQUIRED:
        raise fail(f"{P}client_allowed_sans needs client_auth_type RequireAnyClientCert or "
                   f"RequireAndVerifyClientCert, not {auth!r}")
    tls = TLSSettings(cert_pem=cert_pem, key_pem=key_pem, cert_file=cert_path, key_file=key_path,
                      client_auth_type=auth, client_ca_pem=ca_pem, client_ca_file=ca_path,
                      min_version=versions["min_version"], max_version=versions["max_version"],
                      cipher_suites=ciphers, prefer_server_cipher_suites=prefer,
                      curve_preferences=curves,
                      client_allowed_sans=tuple(norm_san(s) for s in sans) if sans is not None else None)
    build_context(tls, fail)  # the files parse and the pair matches, or fail here
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


# --- a loaded file ------------------------------------------------------------------------

def ssl_context(cfg: WebConfig) -> ssl.SSLContext | None:
    """The server SSLContext for ``cfg``, or None when the file configures no TLS. Pass it to
    ``web.TCPSite(..., ssl_context=...)``; :class:`~exporter.webconfig.auth.WebSecurity` keeps it
    current on reload."""
    if cfg.tls is None:
        return None

    def fail(msg: str) -> WebConfigError:
        return WebConfigError(f"--web.config.file {cfg.path!r}: {msg}")

    return build_context(cfg.tls, fail)


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

