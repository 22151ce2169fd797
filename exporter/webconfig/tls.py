"""The TLS side of the web config: :class:`TLSSettings` (a validated ``tls_server_config``), the
tables from the toolkit's (Go's) names to OpenSSL's, the certificate helpers, and building or
updating the server ``SSLContext``.

Nothing here reads the YAML file or knows its name: errors are raised as ``fail(message)``, the
callback of the caller (:func:`~exporter.webconfig.model.load` and
:func:`~exporter.webconfig.model.ssl_context` word them for the file). A key reaches OpenSSL
through an anonymous memfd where Linux has one, never through the named file.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import ssl
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Iterator

__all__ = ["TLS_VERSIONS", "CLIENT_AUTH", "CIPHERS", "CURVES", "TLSSettings", "EncryptedKey",
           "norm_san", "load_pair", "build_context", "apply_settings"]

TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "RequestClientCert": ssl.CERT_OPTIONAL,
               "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
               "RequireAnyClientCert": ssl.CERT_REQUIRED, "RequireClientCert": ssl.CERT_REQUIRED,
               "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
# Go's tls.CipherSuites() (the secure ones the toolkit accepts) → OpenSSL names. The TLS 1.3
# suites are accepted and, as in Go, not configurable.
CIPHERS = {
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
CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1",
          "X25519": "X25519"}
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.S)


@dataclass(frozen=True)
class TLSSettings:
    """A validated ``tls_server_config``: the PEM bytes as read (what is validated is what is
    served) and the toolkit's names for versions, ciphers, curves and client auth."""

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
        return CLIENT_AUTH[self.client_auth_type]

    @property
    def client_ca_set(self) -> frozenset[bytes]:
        return _cert_set(self.client_ca_pem or b"")


def norm_san(s: str) -> str:
    """A SAN as compared: an IP address in its canonical form, anything else as it is."""
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


class EncryptedKey(Exception):
    """The private key is encrypted: OpenSSL asked for a passphrase, which is never given."""


def _no_password() -> str:
    raise EncryptedKey  # never prompt on a terminal for a key passphrase


def load_pair(ctx: ssl.SSLContext, tls: TLSSettings) -> None:
    """Load the certificate chain and key of ``tls`` into ``ctx`` (live contexts too); raises
    ``ssl.SSLError``, or :class:`EncryptedKey` for a key with a passphrase."""
    with _pem_path(tls.cert_pem) as cp, _pem_path(tls.key_pem) as kp:
        ctx.load_cert_chain(cp, kp, password=_no_password)


def _describe_file(tls: TLSSettings, which: str) -> str:
    name = tls.cert_file if which == "cert" else tls.key_file
    return f"{which}_file {name!r}" if name else f"inline {which}"


def build_context(tls: TLSSettings, fail: Callable[[str], Exception]) -> ssl.SSLContext:
    """A new server SSLContext for ``tls``; what does not load is raised as ``fail(message)``,
    the message naming the key and file but never a secret."""
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
        load_pair(ctx, tls)
    except EncryptedKey:
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
        apply_settings(ctx, tls, initial=True)
    except ssl.SSLError as e:
        raise fail(f"{P}cipher_suites/curve_preferences: OpenSSL refused them ({e.reason})") from None
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _default_ciphers() -> str:
    return ":".join(c["name"] for c in ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).get_ciphers()
                    if c.get("protocol") != "TLSv1.3")


def apply_settings(ctx: ssl.SSLContext, tls: TLSSettings, initial: bool = False) -> None:
    """Versions, ciphers, client auth: settable on a live context (they apply to new handshakes)."""
    ctx.minimum_version = TLS_VERSIONS[tls.min_version]
    ctx.maximum_version = TLS_VERSIONS[tls.max_version]
    names = [CIPHERS[c] for c in tls.cipher_suites if CIPHERS[c]]
    if names:
        ctx.set_ciphers(":".join(names))
    elif tls.cipher_suites or not initial:
        ctx.set_ciphers(_default_ciphers())
    if tls.prefer_server_cipher_suites:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if initial and len(tls.curve_preferences) == 1:
        ctx.set_ecdh_curve(CURVES[tls.curve_preferences[0]])
    ctx.verify_mode = tls.verify_mode

