"""Reloading: :class:`Reloader` polls the web config file and the files it names, and puts a
changed, stable set in force through :meth:`WebSecurity.apply`; a file that does not load or
apply is logged, without secrets, and the previous configuration stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from .auth import WebSecurity
from .model import WebConfigError, describe, load

log = logging.getLogger("wattprint.web")

__all__ = ["RELOAD_INTERVAL_S", "Reloader"]

RELOAD_INTERVAL_S = 2.0


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
