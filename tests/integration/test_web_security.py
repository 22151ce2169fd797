"""--web.config.file on a real listener: an aiohttp server on 127.0.0.1 with the SSL context and
middleware of exporter.webconfig, spoken to by plain ``ssl``/``http.client`` clients.

TLS 1.2 refused under min_version TLS13, client certificates (RequireAndVerifyClientCert), basic
auth over TLS, and a certificate reload seen by new connections while the listener and an open
keep-alive connection carry on."""

from __future__ import annotations

import asyncio
import base64
import http.client
import os
import shutil
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
from aiohttp import web

from exporter import webconfig
from test_webconfig import HASH, PASSWORD, PKI, make_pki, needs_openssl

pytestmark = [pytest.mark.integration, needs_openssl]


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(text="wattprint_up 1\n")


class Served:
    """A real aiohttp server on 127.0.0.1 in its own thread and event loop."""

    def __init__(self, config_path: Path, reload_interval_s: float | None = None) -> None:
        self.security = webconfig.WebSecurity(webconfig.load(config_path))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.reloader: webconfig.Reloader | None = None
        self.port = self.call(self._start(reload_interval_s))

    def call(self, coro, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self, reload_interval_s: float | None) -> int:
        app = web.Application(client_max_size=webconfig.CLIENT_MAX_SIZE)
        app.router.add_get("/metrics", _metrics)
        self.security.install(app)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                    **webconfig.SERVER_LIMITS)
        await self.runner.setup()
        self.site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.security.ssl)
        await self.site.start()
        if reload_interval_s is not None:
            self.reloader = webconfig.Reloader(self.security, interval_s=reload_interval_s)
            self.reloader.start()
        return self.runner.addresses[0][1]

    async def _stop(self) -> None:
        if self.reloader is not None:
            await self.reloader.stop()
        await self.runner.cleanup()

    def close(self) -> None:
        try:
            self.call(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


@pytest.fixture
def serve():
    started: list[Served] = []

    def start(path: Path, **kw) -> Served:
        s = Served(path, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()


def client_ctx(pki: PKI, cert=None, max_version=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca.crt))
    if cert is not None:
        ctx.load_cert_chain(str(cert.crt), str(cert.key))
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


def get(port: int, ctx: ssl.SSLContext, headers: dict | None = None) -> tuple[int, str]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    try:
        conn.request("GET", "/metrics", headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def peer_cn(sock: ssl.SSLSocket) -> str:
    return dict(x[0] for x in sock.getpeercert()["subject"])["commonName"]


def tls_config(tmp_path: Path, crt: Path, key: Path, extra: str = "") -> Path:
    p = tmp_path / "web.yml"
    p.write_text(f"tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n{extra}")
    return p


def test_min_version_tls13_refuses_tls12(tmp_path, pki, serve):
    tls12_only = client_ctx(pki, max_version=ssl.TLSVersion.TLSv1_2)
    default = serve(tls_config(tmp_path, pki.server1.crt, pki.server1.key))
    with socket.create_connection(("127.0.0.1", default.port), timeout=5) as raw, \
            tls12_only.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.version() == "TLSv1.2"  # the toolkit's default minimum lets TLS 1.2 in
    s = serve(tls_config(tmp_path, pki.server1.crt, pki.server1.key, "  min_version: TLS13\n"))
    with pytest.raises(ssl.SSLError):  # asyncio drops the connection: EOF during the handshake
        get(s.port, tls12_only)
    ctx = client_ctx(pki)
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.version() == "TLSv1.3"
    assert get(s.port, ctx) == (200, "wattprint_up 1\n")


def test_client_certificates_required_and_verified(tmp_path, pki, serve):
    s = serve(tls_config(tmp_path, pki.server1.crt, pki.server1.key,
                         "  client_auth_type: RequireAndVerifyClientCert\n"
                         f"  client_ca_file: {pki.ca.crt}\n"))
    assert get(s.port, client_ctx(pki, cert=pki.client)) == (200, "wattprint_up 1\n")
    # Without a certificate, or with one from another CA, the handshake fails (under TLS 1.3 the
    # client hears it on its first read).
    for ctx in (client_ctx(pki), client_ctx(pki, cert=pki.rogue_client)):
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
            get(s.port, ctx)


def test_client_allowed_sans(tmp_path, pki, serve):
    base = ("  client_auth_type: RequireAndVerifyClientCert\n"
            f"  client_ca_file: {pki.ca.crt}\n  client_allowed_sans: [{{}}]\n")
    ok = serve(tls_config(tmp_path, pki.server1.crt, pki.server1.key, base.format("client.example")))
    assert get(ok.port, client_ctx(pki, cert=pki.client))[0] == 200
    other = tmp_path / "other"
    other.mkdir()
    no = serve(tls_config(other, pki.server1.crt, pki.server1.key, base.format("someone.else")))
    assert get(no.port, client_ctx(pki, cert=pki.client))[0] == 403


def test_basic_auth_over_tls(tmp_path, pki, serve):
    p = tls_config(tmp_path, pki.server1.crt, pki.server1.key,
                   f"basic_auth_users:\n  prometheus: {HASH}\n")
    s = serve(p)
    ctx = client_ctx(pki)
    auth = {"Authorization": "Basic " + base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()}
    bad = {"Authorization": "Basic " + base64.b64encode(b"prometheus:nope").decode()}
    assert get(s.port, ctx)[0] == 401
    assert get(s.port, ctx, bad)[0] == 401
    assert get(s.port, ctx, auth) == (200, "wattprint_up 1\n")
    assert get(s.port, ctx, auth)[0] == 200
    assert s.security.stats["cache_hits"] >= 1


def _wait(pred, timeout: float = 8.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_certificate_reload_keeps_listener_and_open_connections(tmp_path, pki, serve):
    crt, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(pki.server1.crt, crt)
    shutil.copy(pki.server1.key, key)
    s = serve(tls_config(tmp_path, crt, key), reload_interval_s=0.05)
    listener = s.site._server  # the asyncio Server behind the TCPSite
    listen_fd = listener.sockets[0].fileno()
    ctx = client_ctx(pki)

    kept = http.client.HTTPSConnection("127.0.0.1", s.port, context=ctx, timeout=5)
    kept.request("GET", "/metrics")
    r = kept.getresponse()
    assert (r.status, r.read()) == (200, b"wattprint_up 1\n")
    kept_sock = kept.sock
    assert peer_cn(kept_sock) == "server-1"

    # Rotate as a person would: new files written beside, then renamed over the old ones.
    for src, dst in ((pki.server2.crt, crt), (pki.server2.key, key)):
        shutil.copy(src, dst.with_suffix(".new"))
        os.replace(dst.with_suffix(".new"), dst)
    _wait(lambda: s.reloader.reloads == 1)

    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as fresh:
        assert peer_cn(fresh) == "server-2"
    assert get(s.port, ctx)[0] == 200

    kept.request("GET", "/metrics")  # the connection opened before the reload still serves
    r = kept.getresponse()
    assert (r.status, r.read()) == (200, b"wattprint_up 1\n")
    assert kept.sock is kept_sock and peer_cn(kept.sock) == "server-1"
    kept.close()

    assert s.site._server is listener and listener.is_serving()
    assert listener.sockets[0].fileno() == listen_fd

    # A broken rotation (key of the other certificate) is refused; server-2 stays in force.
    shutil.copy(pki.server1.key, key.with_suffix(".new"))
    os.replace(key.with_suffix(".new"), key)
    _wait(lambda: s.reloader.failures == 1)
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as fresh:
        assert peer_cn(fresh) == "server-2"


# --- through `wattprint serve` (active once cli/config carry --web.config.file) -------------------

def _wired() -> bool:
    from exporter import config

    return "config_file" in config.WebConfig.model_fields


wired = pytest.mark.skipif(not _wired(), reason="--web.config.file is not wired into `wattprint "
                           "serve` yet (exporter/config.py WebConfig.config_file)")


@wired
def test_serve_with_web_config_file(tmp_path, pki):
    import subprocess
    import sys

    from support import ROOT, free_port

    crt, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(pki.server1.crt, crt)
    shutil.copy(pki.server1.key, key)
    p = tls_config(tmp_path, crt, key, "  min_version: TLS13\nhttp_server_config:\n"
                   "  headers: {X-Content-Type-Options: nosniff}\n"
                   f"basic_auth_users:\n  prometheus: {HASH}\n")
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "exporter", "serve",
                                 f"--web.listen-address=127.0.0.1:{port}", f"--web.config.file={p}"],
                                stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
    ctx = client_ctx(pki)
    auth = {"Authorization": "Basic " + base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()}
    try:
        def ready() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return get(port, ctx, auth)[0] == 200
            except OSError:
                return False

        _wait(ready, timeout=20)
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
        for path in ("/metrics", "/healthz", "/readyz", "/"):
            conn.request("GET", path)
            r = conn.getresponse()
            r.read()
            assert (r.status, r.headers["WWW-Authenticate"]) == (401, 'Basic realm="wattprint"'), path
            assert r.headers["X-Content-Type-Options"] == "nosniff"
        conn.close()
        status, body = get(port, ctx, auth)
        assert status == 200 and "wattprint_build_info" in body
        with pytest.raises(ssl.SSLError):
            get(port, client_ctx(pki, max_version=ssl.TLSVersion.TLSv1_2), auth)

        for src, dst in ((pki.server2.crt, crt), (pki.server2.key, key)):
            shutil.copy(src, dst.with_suffix(".new"))
            os.replace(dst.with_suffix(".new"), dst)

        def rotated() -> bool:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                    ctx.wrap_socket(raw, server_hostname="127.0.0.1") as fresh:
                return peer_cn(fresh) == "server-2"

        _wait(rotated, timeout=10)
        assert get(port, ctx, auth)[0] == 200
    finally:
        proc.terminate()
        proc.wait(10)
    text = log.read_text()
    assert "web config" in text and "reloaded" in text and HASH not in text


@wired
def test_serve_refuses_a_bad_web_config_file(tmp_path):
    import subprocess
    import sys

    from support import ROOT

    p = tmp_path / "web.yml"
    p.write_text(f"basic_auth_users:\n  prometheus: {HASH}\n  eve: oops-{HASH}\n")
    out = subprocess.run([sys.executable, "-m", "exporter", "serve", "--web.listen-address=127.0.0.1:1",
                          f"--web.config.file={p}"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 2
    assert "basic_auth_users.eve: not a bcrypt hash" in out.stderr
    assert HASH not in out.stderr + out.stdout
