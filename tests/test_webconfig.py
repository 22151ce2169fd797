"""--web.config.file (exporter.webconfig): parsing and validation errors (that never show a secret),
the SSL context, the basic-auth middleware and its cache, response headers, rate limit, reload."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import shutil
import ssl
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from exporter import webconfig
from exporter.config import ConfigError
from exporter.webconfig import WebConfigError, WebSecurity, auth

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(
    OPENSSL is None, reason="the openssl CLI is needed to make test certificates (and the "
    "cryptography package is not a dependency)")

PASSWORD = "correct horse battery staple"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()  # cost 4: fast tests


# --- a throwaway PKI made with the openssl CLI ----------------------------------------------

@dataclass
class Pair:
    crt: Path
    key: Path


@dataclass
class PKI:
    ca: Pair
    server1: Pair      # CN=server-1
    server2: Pair      # CN=server-2, same CA
    client: Pair       # CN=client, SAN DNS:client.example, same CA
    other_ca: Pair
    rogue_client: Pair  # signed by other_ca
    encrypted_key: Path  # server1's cert would need this passphrase-protected key


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _ca(d: Path, name: str) -> Pair:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN={name}", "-days", "2",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    return Pair(d / f"{name}.crt", d / f"{name}.key")


def _leaf(d: Path, ca: Pair, name: str, cn: str, san: str, usage: str) -> Pair:
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    (d / f"{name}.ext").write_text(
        f"subjectAltName={san}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nsubjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", str(ca.crt), "-CAkey", str(ca.key),
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
             cwd=d)
    return Pair(d / f"{name}.crt", d / f"{name}.key")


def make_pki(d: Path) -> PKI:
    d.mkdir(parents=True, exist_ok=True)
    ca, other = _ca(d, "ca"), _ca(d, "other-ca")
    server_san = "IP:127.0.0.1,DNS:localhost"
    s1 = _leaf(d, ca, "server1", "server-1", server_san, "serverAuth")
    s2 = _leaf(d, ca, "server2", "server-2", server_san, "serverAuth")
    client = _leaf(d, ca, "client", "client", "DNS:client.example", "clientAuth")
    rogue = _leaf(d, other, "rogue", "client", "DNS:client.example", "clientAuth")
    _openssl("pkey", "-in", str(s1.key), "-aes256", "-passout", "pass:hunter2", "-out",
             "encrypted.key", cwd=d)
    return PKI(ca, s1, s2, client, other, rogue, d / "encrypted.key")


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> PKI:
    if OPENSSL is None:
        pytest.skip("the openssl CLI is needed to make test certificates")
    return make_pki(tmp_path_factory.mktemp("pki"))


def key_fragments(*keys: Path) -> list[str]:
    """Lines of base64 key material: none of them may appear in an error or a log line."""
    out = []
    for k in keys:
        out += [ln for ln in k.read_text().splitlines() if ln and not ln.startswith("-----")]
    return out


def write(tmp_path: Path, text: str, name: str = "web.yml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def load_error(path: Path) -> str:
    with pytest.raises(WebConfigError) as e:
        webconfig.load(path)
    return str(e.value)


# --- parsing ------------------------------------------------------------------------------

def test_empty_file_is_plain_http_without_auth(tmp_path):
    cfg = webconfig.load(write(tmp_path, ""))
    assert cfg.tls is None and cfg.users == {} and cfg.headers == {} and cfg.rate_limit is None
    assert webconfig.ssl_context(cfg) is None
    assert webconfig.describe(cfg) == "TLS off; basic auth off"


@needs_openssl
def test_full_file_loads_with_paths_relative_to_it(tmp_path, pki):
    d = tmp_path / "etc"
    d.mkdir()
    for src, dst in ((pki.server1.crt, "tls.crt"), (pki.server1.key, "tls.key"), (pki.ca.crt, "ca.crt")):
        shutil.copy(src, d / dst)
    p = write(d, f"""
        tls_server_config:
          cert_file: tls.crt
          key_file: tls.key
          client_auth_type: RequireAndVerifyClientCert
          client_ca_file: ca.crt
          min_version: TLS13
          cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]
          curve_preferences: [CurveP256]
          client_allowed_sans: [client.example]
        http_server_config:
          http2: false
          headers: {{X-Content-Type-Options: nosniff, X-Frame-Options: deny, X-XSS-Protection: ""}}
        basic_auth_users:
          prometheus: {HASH}
        rate_limit: {{interval: 1m30s, burst: 5}}
        """)
    cfg = webconfig.load(p)
    assert cfg.tls.cert_file == str(d / "tls.crt") and cfg.tls.client_ca_file == str(d / "ca.crt")
    assert cfg.watched == (str(p), str(d / "tls.crt"), str(d / "tls.key"), str(d / "ca.crt"))
    assert cfg.headers == {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "deny"}
    assert cfg.users == {"prometheus": HASH.encode()} and cfg.http2 is False
    assert cfg.rate_limit == (90.0, 5)
    assert HASH not in repr(cfg) and "PRIVATE" not in repr(cfg)
    line = webconfig.describe(cfg)
    assert "TLS13" in line and "RequireAndVerifyClientCert" in line and "1 user" in line
    assert HASH not in line


@pytest.mark.parametrize("text, needle", [
    ("tls_server_cfg: {}\n", "tls_server_cfg: unknown key; allowed here: auth_excluded_paths, basic_auth_users"),
    ("http_server_config: {http3: true}\n", "http_server_config.http3: unknown key"),
    ("http_server_config: {http2: maybe}\n", "http_server_config.http2='maybe'"),
    ("http_server_config: {headers: {Server: wattprint}}\n",
     "headers.Server: this header can not be configured"),
    ("http_server_config: {headers: {X-Frame-Options: allow}}\n",
     "headers.X-Frame-Options='allow': use one of deny, sameorigin"),
    ("rate_limit: {interval: 1s}\n", "rate_limit.burst=0"),
    ("rate_limit: {interval: soon, burst: 1}\n", "rate_limit.interval='soon': not a duration"),
    ("rate_limit: {every: 1s}\n", "rate_limit.every: unknown key"),
    ("- a\n- b\n", "the top level must be a mapping"),
    ("basic_auth_users: [alice]\n", "basic_auth_users: must be a mapping"),
    ("tls_server_config: {min_version: TLS13}\n", "tls_server_config.cert_file: missing"),
    ("auth_excluded_paths: [healthz]\n", "auth_excluded_paths: 'healthz' is not a path"),
    ("auth_excluded_paths: /healthz\n", "auth_excluded_paths='/healthz': must be a list of strings"),
])
def test_errors_name_the_key_and_value(tmp_path, text, needle):
    msg = load_error(write(tmp_path, text))
    assert needle in msg and str(tmp_path / "web.yml") in msg
    assert isinstance(WebConfigError(msg), ConfigError)  # cli.main prints it and exits 2


def test_missing_file(tmp_path):
    assert "cannot read: No such file or directory" in load_error(tmp_path / "nope.yml")


@needs_openssl
@pytest.mark.parametrize("extra, needle", [
    ("client_auth_type: RequireCertPlease", "client_auth_type='RequireCertPlease': use one of NoClientCert"),
    ("client_auth_type: RequireAndVerifyClientCert", "needs client_ca_file"),
    ("client_auth_type: RequireAnyClientCert", "needs client_ca_file"),
    ("client_ca_file: {ca}", "client_ca_file is set but client_auth_type is NoClientCert"),
    ("min_version: TLS14", "min_version='TLS14': use one of TLS10, TLS11, TLS12, TLS13"),
    ("max_version: [TLS13]", "max_version=['TLS13']: use one of"),
    ("min_version: TLS13\n  max_version: TLS12", "min_version='TLS13' is above max_version='TLS12'"),
    ("cipher_suites: [ECDHE-RSA-AES128-GCM-SHA256]", "unknown cipher 'ECDHE-RSA-AES128-GCM-SHA256'"),
    ("curve_preferences: [P-256]", "unknown curve 'P-256'"),
    ("prefer_server_cipher_suites: 1", "prefer_server_cipher_suites=1"),
    ("client_allowed_sans: [a]", "client_allowed_sans needs client_auth_type"),
    ("client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: {ca}\n  client_allowed_sans: [a]",
     "not 'VerifyClientCertIfGiven'"),
    ("cert: inline", "cert and tls_server_config.cert_file: set one of them"),
    ("ocsp: true", "tls_server_config.ocsp: unknown key"),
])
def test_tls_errors(tmp_path, pki, extra, needle):
    extra = extra.format(ca=pki.ca.crt)
    p = write(tmp_path, f"tls_server_config:\n  cert_file: {pki.server1.crt}\n"
                        f"  key_file: {pki.server1.key}\n  {extra}\n")
    msg = load_error(p)
    assert needle in msg
    assert not any(f in msg for f in key_fragments(pki.server1.key))


@needs_openssl
def test_file_errors_never_show_key_material(tmp_path, pki):
    bad_cert = tmp_path / "garbage.crt"
    bad_cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    empty_ca = tmp_path / "empty-ca.crt"
    empty_ca.write_text("# no certificates here\n")
    cases = {
        "cert_file: /no/such.crt\n  key_file: {k1}": "cert_file='/no/such.crt': cannot read",
        "cert_file: {c1}\n  key_file: /no/such.key": "key_file='/no/such.key': cannot read",
        "cert_file: {c1}\n  key_file: {k2}": "does not match the certificate",
        "cert_file: {c1}\n  key_file: {c1}": "is not a PEM private key",
        "cert_file: {bad}\n  key_file: {k1}": "not a PEM certificate",
        "cert_file: {k1}\n  key_file: {k1}": "not a PEM certificate",
        "cert_file: {c1}\n  key_file: {enc}": "the key is encrypted",
        "cert_file: {c1}\n  key_file: {k1}\n  client_auth_type: RequireAndVerifyClientCert\n"
        "  client_ca_file: {empty}": "contains no PEM certificate",
        "cert_file: {c1}\n  key: |\n{inline_k2}": "inline key does not match the certificate",
        "cert_file: {c1}\n  key: 12345": "key=(hidden): must be a string",
    }
    inline_k2 = textwrap.indent(pki.server2.key.read_text(), "    ")
    secrets_ = key_fragments(pki.server1.key, pki.server2.key, pki.encrypted_key)
    for extra, needle in cases.items():
        text = "tls_server_config:\n  " + extra.format(
            c1=pki.server1.crt, k1=pki.server1.key, k2=pki.server2.key, bad=bad_cert,
            enc=pki.encrypted_key, empty=empty_ca, inline_k2=inline_k2) + "\n"
        msg = load_error(write(tmp_path, text))
        assert needle in msg, (extra, msg)
        leaked = [f for f in secrets_ if f in msg]
        assert not leaked and "12345" not in msg, (extra, msg)


@needs_openssl
def test_inline_cert_key_and_ca(tmp_path, pki):
    ind = lambda p: textwrap.indent(p.read_text(), "    ")  # noqa: E731
    p = write(tmp_path, "tls_server_config:\n  cert: |\n" + ind(pki.server1.crt)
              + "  key: |\n" + ind(pki.server1.key) + "  client_auth_type: VerifyClientCertIfGiven\n"
              + "  client_ca: |\n" + ind(pki.ca.crt))
    cfg = webconfig.load(p)
    assert cfg.tls.cert_file is None and cfg.watched == (str(p),)
    ctx = webconfig.ssl_context(cfg)
    assert ctx.verify_mode == ssl.CERT_OPTIONAL and len(ctx.get_ca_certs()) == 1
    assert "PRIVATE KEY" not in repr(cfg)


@pytest.mark.parametrize("value", [
    "$2b$10$tooShortButSecret",                      # truncated
    "plaintext-password-oops",                      # not hashed at all
    "$1$saltsalt$md5cryptIsNotBcrypt.............",  # md5-crypt
    "$2x$10$" + "a" * 53,                            # unknown bcrypt variant
    "$2b$03$" + "a" * 53,                            # cost below 4
])
def test_bad_password_hashes_are_named_not_shown(tmp_path, value):
    msg = load_error(write(tmp_path, f"basic_auth_users:\n  alice: '{value}'\n"))
    assert "basic_auth_users.alice: not a bcrypt hash" in msg
    assert value not in msg and value[7:] not in msg


@pytest.mark.parametrize("variant", ["$2a$", "$2b$", "$2y$"])
def test_bcrypt_variants_accepted(tmp_path, variant):
    cfg = webconfig.load(write(tmp_path, f"basic_auth_users:\n  alice: '{variant}{HASH[4:]}'\n"))
    assert cfg.users["alice"].startswith(variant.encode())


def test_no_hash_in_any_error(tmp_path):
    """Errors elsewhere in a file holding valid hashes never quote them: YAML syntax errors
    (PyYAML quotes the offending line), duplicate users, bad user names, other keys."""
    cases = [
        f"basic_auth_users:\n  alice: {HASH}\n  bob: {HASH}: [\n",
        f"basic_auth_users:\n  alice: {HASH}\n  alice: {HASH}\n",
        f"basic_auth_users:\n  'a:b': {HASH}\n",
        f"basic_auth_users:\n  alice: {HASH}\nrate_limit: {{burst: -1, interval: 1s}}\n",
        f"basic_auth_users:\n  alice: [{HASH}]\n",
        f"basic_auth_users:\n\talice: {HASH}\n",
    ]
    for text in cases:
        msg = load_error(write(tmp_path, text))
        assert HASH not in msg and HASH[7:29] not in msg and HASH[29:] not in msg, msg
    assert "duplicate key 'alice' at line 3" in load_error(write(tmp_path, cases[1]))
    assert "can not contain ':'" in load_error(write(tmp_path, cases[2]))
    assert "not valid YAML at line" in load_error(write(tmp_path, cases[0]))


# --- SSL context ----------------------------------------------------------------------------

@needs_openssl
@pytest.mark.parametrize("auth, mode", [
    ("NoClientCert", ssl.CERT_NONE), ("RequestClientCert", ssl.CERT_OPTIONAL),
    ("VerifyClientCertIfGiven", ssl.CERT_OPTIONAL), ("RequireAnyClientCert", ssl.CERT_REQUIRED),
    ("RequireAndVerifyClientCert", ssl.CERT_REQUIRED),
])
def test_ssl_context_client_auth(tmp_path, pki, auth, mode):
    ca = f"\n  client_ca_file: {pki.ca.crt}" if auth != "NoClientCert" else ""
    cfg = webconfig.load(write(tmp_path, f"""tls_server_config:
  cert_file: {pki.server1.crt}
  key_file: {pki.server1.key}
  client_auth_type: {auth}{ca}
  min_version: TLS13
"""))
    ctx = webconfig.ssl_context(cfg)
    assert ctx.verify_mode == mode
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_3
    assert len(ctx.get_ca_certs()) == (0 if auth == "NoClientCert" else 1)


@needs_openssl
def test_ssl_context_ciphers_and_preference(tmp_path, pki):
    cfg = webconfig.load(write(tmp_path, f"""tls_server_config:
  cert_file: {pki.server1.crt}
  key_file: {pki.server1.key}
  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]
  prefer_server_cipher_suites: false
"""))
    ctx = webconfig.ssl_context(cfg)
    tls12 = [c["name"] for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"]
    assert tls12 == ["ECDHE-ECDSA-AES256-GCM-SHA384"]
    assert not ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2  # the toolkit's default


# --- middleware -----------------------------------------------------------------------------

def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(text="m 1\n")


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _client(security: WebSecurity) -> TestClient:
    app = web.Application()
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    security.install(app)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


def security_for(tmp_path: Path, text: str, **kw) -> WebSecurity:
    kw.setdefault("fail_delay_s", 0.0)  # the tarpit has its own test
    return WebSecurity(webconfig.load(write(tmp_path, text)), **kw)


@pytest.fixture
def count_bcrypt(monkeypatch):
    calls = []
    real = auth.checkpw

    def counting(password, hashed):
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(auth, "checkpw", counting)
    return calls


def test_basic_auth_right_wrong_missing(tmp_path, count_bcrypt):
    sec = security_for(tmp_path, f"basic_auth_users:\n  prometheus: {HASH}\n")

    async def go():
        c = await _client(sec)
        try:
            out = {}
            for name, headers in {
                "right": basic("prometheus", PASSWORD), "wrong": basic("prometheus", "guess"),
                "unknown_user": basic("mallory", PASSWORD), "missing": {},
                "not_basic": {"Authorization": "Bearer abc"},
                "not_base64": {"Authorization": "Basic !!!"},
                "no_colon": {"Authorization": "Basic " + base64.b64encode(b"prometheus").decode()},
                "health": basic("prometheus", "guess"),
            }.items():
                r = await c.get("/healthz" if name == "health" else "/metrics", headers=headers)
                out[name] = (r.status, r.headers.get("WWW-Authenticate"), await r.text())
            return out
        finally:
            await c.close()

    out = asyncio.run(go())
    assert out["right"][:1] == (200,) and out["right"][2] == "m 1\n"
    for name in ("wrong", "unknown_user", "missing", "not_basic", "not_base64", "no_colon", "health"):
        assert out[name][:2] == (401, 'Basic realm="wattprint"'), name
    # wrong password and unknown user both paid one bcrypt (the latter against a decoy hash); the
    # same wrong password again (on /healthz) paid none: wrong logins are remembered
    assert len(count_bcrypt) == 3 and count_bcrypt[2] != HASH.encode()
    assert sec.stats["denied"] == 7


def test_auth_excluded_paths_are_exact(tmp_path, count_bcrypt):
    sec = security_for(tmp_path, f"basic_auth_users:\n  prometheus: {HASH}\n"
                                 "auth_excluded_paths: [/healthz]\n")
    assert "open without auth: /healthz" in webconfig.describe(sec.config)

    async def go():
        c = await _client(sec)
        try:
            return [(await c.get(path)).status
                    for path in ("/healthz", "/healthz?x=1", "/metrics", "/healthz/", "/HEALTHZ")]
        finally:
            await c.close()

    assert asyncio.run(go()) == [200, 200, 401, 401, 401]
    assert count_bcrypt == []  # nothing to check: no credentials were sent


def test_cache_hit_skips_bcrypt_and_keeps_no_plaintext(tmp_path, count_bcrypt):
    sec = security_for(tmp_path, f"basic_auth_users:\n  prometheus: {HASH}\n")

    async def go():
        c = await _client(sec)
        try:
            statuses = []
            for pw in (PASSWORD, PASSWORD, PASSWORD, "wrong", PASSWORD):
                r = await c.get("/metrics", headers=basic("prometheus", pw))
                statuses.append(r.status)
            return statuses
        finally:
            await c.close()

    assert asyncio.run(go()) == [200, 200, 200, 401, 200]
    assert len(count_bcrypt) == 2  # the first login and the wrong password; hits skip bcrypt
    assert sec.stats["cache_hits"] == 3
    import hashlib

    (slot, proof), = sec._cache.items()
    assert slot == ("prometheus", HASH.encode())
    assert PASSWORD.encode() not in proof and proof != hashlib.sha256(PASSWORD.encode()).digest()
    assert len(proof) == 32


def test_cache_is_bounded_lru(tmp_path):
    users = {f"u{i}": bcrypt.hashpw(f"p{i}".encode(), bcrypt.gensalt(4)).decode() for i in range(4)}
    text = "basic_auth_users:\n" + "".join(f"  {u}: '{h}'\n" for u, h in users.items())
    sec = security_for(tmp_path, text, cache_size=2)

    async def go():
        for i in (0, 1, 2, 1, 3):
            assert await sec.authorized(sec.config, basic(f"u{i}", f"p{i}")["Authorization"])
        return [u for u, _ in sec._cache]

    assert asyncio.run(go()) == ["u1", "u3"]


def test_headers_on_every_response(tmp_path):
    sec = security_for(tmp_path, f"""http_server_config:
  headers:
    X-Content-Type-Options: nosniff
    Content-Security-Policy: "default-src 'none'"
basic_auth_users:
  prometheus: {HASH}
""")

    async def go():
        c = await _client(sec)
        try:
            ok = await c.get("/metrics", headers=basic("prometheus", PASSWORD))
            denied = await c.get("/metrics")
            missing = await c.get("/nope", headers=basic("prometheus", PASSWORD))
            return [(r.status, r.headers.get("X-Content-Type-Options"),
                     r.headers.get("Content-Security-Policy")) for r in (ok, denied, missing)]
        finally:
            await c.close()

    assert asyncio.run(go()) == [(200, "nosniff", "default-src 'none'"),
                                 (401, "nosniff", "default-src 'none'"),
                                 (404, "nosniff", "default-src 'none'")]


def test_rate_limit(tmp_path):
    sec = security_for(tmp_path, "rate_limit: {interval: 1h, burst: 2}\n")

    async def go():
        c = await _client(sec)
        try:
            return [(await c.get("/metrics")).status for _ in range(3)]
        finally:
            await c.close()

    assert asyncio.run(go()) == [200, 200, 429]


# --- reload ---------------------------------------------------------------------------------

def test_reloader_swaps_users_and_keeps_old_on_broken_file(tmp_path, caplog):
    p = write(tmp_path, f"basic_auth_users:\n  prometheus: {HASH}\n")
    sec = WebSecurity(webconfig.load(p))
    rl = webconfig.Reloader(sec, interval_s=0.01)
    header_old = basic("prometheus", PASSWORD)["Authorization"]
    new_hash = bcrypt.hashpw(b"rotated", bcrypt.gensalt(4)).decode()

    def bump(text: str) -> None:
        p.write_text(text)
        st = p.stat()
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))

    async def go():
        assert await sec.authorized(sec.config, header_old)
        assert rl.check() is None  # nothing changed
        bump(f"basic_auth_users:\n  prometheus: {new_hash}\n")
        assert rl.check() is None  # changed: wait until it holds still for one poll
        assert rl.check() is True
        assert not await sec.authorized(sec.config, header_old)
        assert await sec.authorized(sec.config, basic("prometheus", "rotated")["Authorization"])
        with caplog.at_level(logging.ERROR, logger="wattprint.web"):
            bump(f"basic_auth_users:\n  prometheus: {new_hash}\n  eve: not-a-hash-{HASH}\n")
            assert rl.check() is None and rl.check() is False
            assert rl.check() is None  # logged once per change, not every poll
        assert await sec.authorized(sec.config, basic("prometheus", "rotated")["Authorization"])
        assert sec.config.users == {"prometheus": new_hash.encode()}

    asyncio.run(go())
    assert rl.reloads == 1 and rl.failures == 1
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "basic_auth_users.eve: not a bcrypt hash" in logged and "previous one stays" in logged
    assert HASH not in logged and new_hash not in logged and HASH[7:] not in logged


@needs_openssl
def test_apply_refuses_what_needs_a_restart(tmp_path, pki):
    tls = f"tls_server_config:\n  cert_file: {pki.server1.crt}\n  key_file: {pki.server1.key}\n"
    sec = WebSecurity(webconfig.load(write(tmp_path, tls)))
    ctx = sec.ssl
    with pytest.raises(WebConfigError, match="switching TLS off needs a restart"):
        sec.apply(webconfig.load(write(tmp_path, "", "plain.yml")))
    with_ca = tls + f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki.ca.crt}\n"
    sec.apply(webconfig.load(write(tmp_path, with_ca, "ca.yml")))  # adding a CA applies in place
    assert sec.ssl is ctx and ctx.verify_mode == ssl.CERT_REQUIRED
    other = tls + f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki.other_ca.crt}\n"
    with pytest.raises(WebConfigError, match="a client CA was removed"):
        sec.apply(webconfig.load(write(tmp_path, other, "other.yml")))
    assert sec.config.tls.client_ca_file == str(pki.ca.crt)  # unchanged
    # client certificates off again: the CA still in the context is unused, so that applies
    sec.apply(webconfig.load(write(tmp_path, tls + "  min_version: TLS13\n", "v13.yml")))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3 and ctx.verify_mode == ssl.CERT_NONE
    with pytest.raises(WebConfigError, match="a client CA was removed"):  # ... but it is still there
        sec.apply(webconfig.load(write(tmp_path, other, "other.yml")))
    assert ctx.verify_mode == ssl.CERT_NONE
    plain = WebSecurity(webconfig.load(write(tmp_path, "", "plain.yml")))
    with pytest.raises(WebConfigError, match="switching TLS on needs a restart"):
        plain.apply(webconfig.load(write(tmp_path, tls)))


def test_server_limits_are_accepted_by_aiohttp():
    async def go():
        app = web.Application(client_max_size=webconfig.CLIENT_MAX_SIZE)
        runner = web.AppRunner(app, handle_signals=False, **webconfig.SERVER_LIMITS)
        await runner.setup()
        try:
            return runner.server._kwargs
        finally:
            await runner.cleanup()

    kw = asyncio.run(go())
    assert kw["keepalive_timeout"] == webconfig.KEEPALIVE_TIMEOUT_S and kw["max_headers"] == 64
    assert re.fullmatch(r"\d+", str(kw["max_line_size"]))


def test_strangers_cannot_queue_ahead_of_the_real_scrapers_first_login(tmp_path, count_bcrypt, monkeypatch):
    """Old: 50 clients with wrong passwords queued without bound on the one bcrypt lock, and the
    real scraper's first login timed out at 10 s (issue 14 #6). Now at most MAX_PENDING_LOGINS
    wait (the rest get 503 at once, after the tarpit delay), a wrong login is answered late, the
    same wrong login costs no bcrypt again, and a verified scraper never waits for anybody."""
    import time as _time

    slow = 0.2
    real = auth.checkpw

    def slow_checkpw(password, hashed):
        _time.sleep(slow)  # a cost-12 bcrypt, as on a slow node
        return real(password, hashed)
    monkeypatch.setattr(auth, "checkpw", slow_checkpw)
    sec = security_for(tmp_path, f"basic_auth_users:\n  prometheus: {HASH}\n", fail_delay_s=0.3)

    async def go():
        c = await _client(sec)
        try:
            first = await c.get("/metrics", headers=basic("prometheus", PASSWORD))  # verified, cached
            assert first.status == 200
            strangers = [asyncio.ensure_future(c.get("/metrics", headers=basic("prometheus", f"guess{i}")))
                         for i in range(20)]
            await asyncio.sleep(0.05)
            t0 = _time.monotonic()
            cached = await c.get("/metrics", headers=basic("prometheus", PASSWORD))
            waited = _time.monotonic() - t0
            statuses = sorted([r.status for r in await asyncio.gather(*strangers)])
            t1 = _time.monotonic()
            again = await c.get("/metrics", headers=basic("prometheus", "guess0"))  # remembered: no bcrypt
            late = _time.monotonic() - t1
            return cached.status, waited, statuses, again.status, late
        finally:
            await c.close()

    cached, waited, statuses, again, late = asyncio.run(go())
    assert cached == 200 and waited < slow  # never behind the strangers' bcrypt checks
    assert statuses.count(503) >= 20 - auth.MAX_PENDING_LOGINS and set(statuses) <= {401, 503}
    assert sec.stats["logins_refused"] >= 20 - auth.MAX_PENDING_LOGINS
    assert again == 401 and late >= 0.3  # answered late (the tarpit), without a bcrypt
    assert len(count_bcrypt) <= 1 + auth.MAX_PENDING_LOGINS + 1
