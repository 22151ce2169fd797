"""The configuration in force on the server: :class:`WebSecurity`, the aiohttp middleware that
applies the rate limit, the client certificate SAN check and basic auth (bcrypt, one check at a
time, with a cache of verified logins that keeps no plaintext), adds the response headers, and
swaps in a reloaded file (``apply``) without closing the listener.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import secrets
import ssl
import time
from collections import OrderedDict
from typing import Awaitable, Callable

import bcrypt
from aiohttp import web

from .model import WebConfig, WebConfigError, ssl_context
from .tls import EncryptedKey, apply_settings, load_pair, norm_san

__all__ = ["REALM", "AUTH_CACHE_SIZE", "checkpw", "WebSecurity"]

REALM = "wattprint"
AUTH_CACHE_SIZE = 256
MAX_PENDING_LOGINS = 8  # logins waiting for bcrypt at once; more get 503 at once (each check ~0.25 s at cost 12)
MAX_PENDING_PER_PEER = 2  # of them from one client address: one peer cannot take every place
FAIL_DELAY_S = 1.0  # a wrong login (or one turned away) is answered this late: a flood slows itself
DENIED_CACHE_SIZE = 1024  # wrong logins remembered (as HMACs): the same wrong password costs no bcrypt again


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


def checkpw(password: bytes, hashed: bytes) -> bool:
    """bcrypt's verdict on ``password`` against ``hashed``; False, not an error, for what bcrypt
    refuses. :class:`WebSecurity` calls it by this module-level name, one call at a time."""
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
        out.add(norm_san(value.strip()) if kind == "IP Address" else value)
    return out


class WebSecurity:
    """The configuration in force: its SSLContext, the auth middleware, the response headers.

    ``install(app)`` adds the middleware and the header hook to an aiohttp app (before it starts);
    ``ssl`` is the context for ``TCPSite``; ``apply(new)`` swaps in a reloaded file.
    """

    def __init__(self, cfg: WebConfig, ssl_ctx: ssl.SSLContext | None = None,
                 cache_size: int = AUTH_CACHE_SIZE, fail_delay_s: float = FAIL_DELAY_S) -> None:
        self._cfg = cfg
        self.fail_delay_s = fail_delay_s
        self._denied: OrderedDict[bytes, None] = OrderedDict()
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
        self.stats = {"cache_hits": 0, "bcrypt_checks": 0, "denied": 0, "rate_limited": 0, "logins_refused": 0}
        self._waiting = 0  # logins queued on the bcrypt lock (at most MAX_PENDING_LOGINS)
        self._waiting_by_peer: dict[str, int] = {}

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
                load_pair(self.ssl, n)
                if n.client_ca_pem and not n.client_ca_set <= self._loaded_cas:
                    self.ssl.load_verify_locations(cadata=n.client_ca_pem.decode("ascii", "replace"))
                    self._loaded_cas = self._loaded_cas | n.client_ca_set
                apply_settings(self.ssl, n)
            except (ssl.SSLError, ValueError, EncryptedKey) as e:
                with contextlib.suppress(Exception):  # put the old pair and settings back
                    load_pair(self.ssl, o)
                    apply_settings(self.ssl, o)
                reason = getattr(e, "reason", None) or type(e).__name__
                raise WebConfigError(f"--web.config.file {new.path!r}: the new TLS settings did "
                                     f"not load ({reason})") from None
        if new.rate_limit != old.rate_limit:
            self._bucket = _Bucket(*new.rate_limit) if new.rate_limit else None
        self._cfg = new
        for slot in [s for s in self._cache if new.users.get(s[0]) != s[1]]:
            del self._cache[slot]  # users removed or given a new password must log in again
        self._denied.clear()  # a login wrong before may be right now

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
        if cfg.users:
            verdict = await self.authorized(cfg, request.headers.get("Authorization"), request.remote or "")
            if verdict is None:  # the login queue is full: refuse, never queue without bound
                self.stats["logins_refused"] += 1
                await asyncio.sleep(self.fail_delay_s)
                return web.Response(status=503, text="too many logins in progress\n",
                                    headers={"Retry-After": "1"})
            if not verdict:
                self.stats["denied"] += 1
                if request.headers.get("Authorization"):  # a wrong login, not a first request
                    await asyncio.sleep(self.fail_delay_s)
                return web.Response(status=401, text="Unauthorized\n",
                                    headers={"WWW-Authenticate": f'Basic realm="{REALM}"'})
        return await handler(request)

    async def authorized(self, cfg: WebConfig, header: str | None, peer: str = "") -> bool | None:
        """True for a verified login (a cached one without waiting for anybody), False for a
        wrong one, None when MAX_PENDING_LOGINS logins already wait for a bcrypt check (strangers
        trying passwords cannot queue without bound ahead of the real scraper's first login)."""
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
        if proof in self._denied:  # this exact wrong login was checked already
            self._denied.move_to_end(proof)
            return False
        if self._waiting >= MAX_PENDING_LOGINS or self._waiting_by_peer.get(peer, 0) >= MAX_PENDING_PER_PEER:
            return None
        self._waiting += 1
        self._waiting_by_peer[peer] = self._waiting_by_peer.get(peer, 0) + 1
        try:
            target = hashed if hashed is not None else await self._decoy(cfg)
            async with self._bcrypt_lock:
                self.stats["bcrypt_checks"] += 1
                ok = await asyncio.to_thread(checkpw, password, target)
        finally:
            self._waiting -= 1
            left = self._waiting_by_peer.pop(peer, 1) - 1
            if left:
                self._waiting_by_peer[peer] = left
        if not (ok and slot is not None):
            if self._cfg is cfg:
                self._denied[proof] = None
                while len(self._denied) > DENIED_CACHE_SIZE:
                    self._denied.popitem(last=False)
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

