"""The composition root's choices that no other test sees: the TLS library is kept out of a
daemon that never speaks TLS (and loaded when anything configured might)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from exporter import config, daemon
from support import ROOT


def cfg(**flags):
    base = {("kubernetes", "enabled"): "off", ("engines", "enabled"): "false"}
    base.update({tuple(k.split("__")): v for k, v in flags.items()})
    return config.load(None, base)


@pytest.mark.parametrize("flags, tls", [
    ({}, False),
    ({"kubernetes__enabled": "on"}, True),
    ({"kubernetes__enabled": "auto", "kubernetes__api_url": "https://10.0.0.1"}, True),
    ({"engines__enabled": "true"}, True),
])
def test_needs_tls(flags, tls):
    assert daemon.needs_tls(cfg(**flags)) is tls


def test_needs_tls_with_a_web_config_or_a_provider(tmp_path):
    wc = tmp_path / "web.yml"
    wc.write_text("basic_auth_users: {}\n")
    assert daemon.needs_tls(cfg(web__config_file=str(wc)))
    assert not daemon.needs_tls(cfg())


CHILD = r"""
import sys
from exporter import config, daemon
c = config.load(None, {("kubernetes", "enabled"): "off", ("engines", "enabled"): "false"})
assert daemon.skip_tls_if_unused(c)
import asyncio
import aiohttp
from aiohttp import web

async def main():
    app = web.Application()
    app.router.add_get("/", lambda r: web.Response(text="plain"))
    runner = web.AppRunner(app); await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0); await site.start()
    port = site._server.sockets[0].getsockname()[1]
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{port}/") as r:
            body = await r.text()
    await runner.cleanup()
    return body

print(asyncio.run(main()), "ssl" in sys.modules and sys.modules["ssl"] is not None)
"""


def test_without_tls_plain_http_serves_and_ssl_is_never_loaded():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["plain", "False"]
