"""The machinery every fake third-party server shares: an aiohttp server on 127.0.0.1, a
switchable failure mode, and a way to release requests parked by the "hang" mode."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from aiohttp import web
from aiohttp.test_utils import TestServer


class FakeServer:
    def __init__(self) -> None:
        self.mode = "ok"
        self._release = asyncio.Event()
        self._server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return str(self._server.make_url("")).rstrip("/")

    async def start(self):
        app = web.Application()
        self.routes(app.router)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()
        return self

    async def close(self) -> None:
        self._release.set()
        if self._server is not None:
            await self._server.close()

    def routes(self, router: web.UrlDispatcher) -> None:
        raise NotImplementedError

    async def hang(self) -> web.Response:
        """Never answer (until close): the client's timeout must fire."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._release.wait(), 30)
        return web.Response(status=503)


class Background:
    """A fake server on its own event loop thread, for tests that drive real processes."""

    def __init__(self, fake: FakeServer) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.fake = asyncio.run_coroutine_threadsafe(fake.start(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
