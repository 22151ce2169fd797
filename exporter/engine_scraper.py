"""Reads the local inference servers' own /metrics and turns them into request and token counts
per endpoint, beside the energy, with the same labels.

Targets come from the sampler (which already knows every process and its identity): each process
whose own command line is an inference server, with its metrics port from its flags, or from its
pod's ``prometheus.io/port``/``prometheus.io/path`` annotations, or a configured override.
Scrapes run in the HTTP server's event loop, concurrently, each bounded in time and size, so they
never delay the sample loop. Increments are handed to the sampler through a queue and land in the
ledger inside its next sample.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from .engines import READERS, EngineParseError
from .engines.normalise import Normaliser
from .engine_targets import Target
from .identity.resolver import Workload

log = logging.getLogger(__name__)
MAX_MODELS = 32  # models read per llama.cpp router, at most
MAX_MODELS_PER_TARGET = 64  # a reading with more models is refused (too_many_models): state per target bounded
CONCURRENCY = 4  # scrapes in flight at once: at most CONCURRENCY × max_bytes of bodies in memory
BACKOFF_MAX_S = 60.0  # a target failing again and again is read at most this rarely
MAX_ERROR_SERIES = 512  # (namespace, endpoint, engine, kind) error/restart series kept; beyond: endpoint "overflow"

@dataclass
class Increment:
    """One good reading of one model's counters: what moved since the last one (all zero when
    nothing did), when its response arrived (monotonic ``at``), and whether a counter went
    backwards (``reset``: the engine restarted since the last reading)."""
    workload: Workload
    model: str
    counts: dict[str, float]
    at: float | None = None
    reset: bool = False


@dataclass
class ScrapeState:
    up: bool = False
    errors: dict[str, int] = field(default_factory=dict)
    failing: int = 0        # consecutive failed scrapes
    next_at: float = 0.0    # monotonic time before which a failing target is left alone


class EngineScraper:
    def __init__(self, targets: Any, interval_s: float = 5.0, timeout_s: float = 2.0,
                 max_bytes: int = 8 * 1024 * 1024) -> None:
        self.targets = targets            # callable returning the current list[Target]
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.out: queue.SimpleQueue[Increment] = queue.SimpleQueue()
        self.normaliser = Normaliser()
        self.states: dict[Target, ScrapeState] = {}
        self.served: dict[Target, frozenset[str]] = {}  # models of each target's latest good scrape
        self.resets: dict[tuple[str, str, str], int] = {}
        # errors by (namespace, endpoint, engine, kind) for the daemon's lifetime: a target that
        # leaves the list and comes back must not restart its counter (ScrapeState.errors is per
        # target visit); at most MAX_ERROR_SERIES keys, the rest on endpoint "overflow"
        self.error_totals: dict[tuple[str, str, str, str], int] = {}
        self._keys: dict[Target, set] = {}  # the normaliser's keys of each target, dropped with it
        # Parsing runs on its own thread, never on the event loop that answers /metrics: a hostile
        # 20 MB body costs this thread its time, not the scraper of the exporter its latency.
        from concurrent.futures import ThreadPoolExecutor

        self._parser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-parse")
        self._slots = asyncio.Semaphore(CONCURRENCY)

    async def in_own_thread(self) -> None:
        """Run the scraper on a thread and event loop of its own until cancelled: reading engines'
        bodies (up to 4 × max_bytes at once) never runs on the loop that answers /metrics."""
        import threading

        loop = asyncio.get_running_loop()
        done = loop.create_future()
        own: dict[str, Any] = {}

        def thread_main() -> None:
            inner = asyncio.new_event_loop()
            own["loop"] = inner
            own["task"] = inner.create_task(self.run())
            try:
                inner.run_until_complete(own["task"])
            except asyncio.CancelledError:
                pass  # shutdown
            except BaseException:  # noqa: BLE001 - a bug: say so, scraping has stopped
                log.exception("engine scraping stopped")
                for st in self.states.values():
                    st.up = False
            finally:
                inner.close()
                loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

        thread = threading.Thread(target=thread_main, name="engine-scraper", daemon=True)
        thread.start()
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            if "loop" in own:
                own["loop"].call_soon_threadsafe(own["task"].cancel)
            await asyncio.get_running_loop().run_in_executor(None, thread.join, 5)
            raise

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
            while True:
                started = time.monotonic()
                await self.scrape_all(session)
                await asyncio.sleep(max(0.1, self.interval_s - (time.monotonic() - started)))

    async def scrape_all(self, session: aiohttp.ClientSession) -> None:
        targets = list(self.targets())
        now = time.monotonic()
        due = [t for t in targets if (st := self.states.get(t)) is None or st.next_at <= now]
        await asyncio.gather(*(self._scrape(session, t) for t in due))
        live = set(targets)
        for gone in [t for t in self.states if t not in live]:
            del self.states[gone]
            self.served.pop(gone, None)
            for key in self._keys.pop(gone, ()):
                self.normaliser.forget(key)

    async def _parse(self, engine: str, body: bytes) -> Any:
        reading = await asyncio.get_running_loop().run_in_executor(self._parser, _decode_parse, engine, body)
        if len(reading.models) > MAX_MODELS_PER_TARGET:
            raise EngineParseError("too_many_models", f"{len(reading.models)} models, more than "
                                   f"{MAX_MODELS_PER_TARGET}: refused whole")
        return reading

    async def _scrape(self, session: aiohttp.ClientSession, t: Target) -> None:
        st = self.states.setdefault(t, ScrapeState())
        try:
            async with self._slots:
                if t.per_model:
                    readings = await self._per_model(session, t)
                    at = time.monotonic()
                else:
                    body = await self._fetch(session, t.url)
                    at = time.monotonic()  # the counters' time: before the parse, which may queue
                    readings = [("", await self._parse(t.engine, body))]
        except EngineParseError as e:
            if e.kind == "too_many_models":
                return self._fail(t, st, e.kind, e.message)
            return self._fail(t, st, f"parse_{e.kind}", str(e))
        except TooLarge:
            return self._fail(t, st, "too_large", f"more than {self.max_bytes} bytes")
        except (asyncio.TimeoutError, TimeoutError):
            return self._fail(t, st, "timeout", f"no answer in {self.timeout_s:g}s")
        except aiohttp.ClientResponseError as e:
            return self._fail(t, st, "http", f"HTTP {e.status}")
        except (aiohttp.ClientError, OSError) as e:
            return self._fail(t, st, "connect", type(e).__name__)
        if not st.up:
            log.info("engine %s at %s: scraping", t.engine, t.url)
        st.up, st.failing, st.next_at = True, 0, 0.0
        self.served[t] = frozenset(name or fill or t.model for fill, r in readings for name in r.models)
        keys = self._keys.get(t)
        if keys is not None and len(keys) > 2 * MAX_MODELS_PER_TARGET:  # model names that came and went
            live = {(t.workload, t.url, m) for m in self.served[t]}
            for key in keys - live:
                self.normaliser.forget(key)
            self._keys[t] = keys & live
        for fill, reading in readings:
            self._book(t, reading, fill, at)

    def _book(self, t: Target, reading: Any, fill: str, at: float) -> None:
        for name, mc in reading.models.items():
            model = name or fill or t.model
            counts = mc.counters()
            key = (t.workload, t.url, model)
            self._keys.setdefault(t, set()).add(key)
            before = self.normaliser.resets.get(key, 0)
            inc = self.normaliser.update(key, counts)
            reset = self.normaliser.resets.get(key, 0) > before
            if reset:
                k = self._bounded(self.resets, (t.workload.namespace, t.workload.endpoint, t.engine))
                self.resets[k] = self.resets.get(k, 0) + 1
            # every good reading, zeros too: the marginal-cost windows need their edges
            self.out.put(Increment(t.workload, model, inc, at, reset))

    async def _per_model(self, session: aiohttp.ClientSession, t: Target) -> list[tuple[str, Any]]:
        """llama.cpp router mode: the loaded models from ``/models`` (``data[].id``,
        ``status.value``), then ``/metrics?model=<id>&autoload=false`` for each, at most
        ``MAX_MODELS`` (a scrape must never load a model: an unloaded one has nothing to count)."""
        base = t.url.split("?", 1)[0].rsplit("/", 1)[0]
        try:
            listing = json.loads((await self._fetch(session, base + "/models")).decode("utf-8", "replace"))
            ids = [m["id"] for m in listing["data"]
                   if isinstance(m, dict) and isinstance(m.get("id"), str)
                   and (m.get("status") or {}).get("value", "loaded") == "loaded"]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise EngineParseError("format", f"/models: not a model list ({type(e).__name__})") from None

        async def one(model: str) -> tuple[str, Any] | None:
            url = f"{base}/metrics?model={quote(model, safe='')}&autoload=false"
            try:
                return model, await self._parse(t.engine, await self._fetch(session, url))
            except (EngineParseError, TooLarge, asyncio.TimeoutError, aiohttp.ClientError, OSError):
                return None  # unloaded meanwhile, or failing: no news for it this round
        # concurrently, and a model that fails costs itself only: its counters are cumulative,
        # so the next good scrape catches up
        results = await asyncio.gather(*(one(m) for m in ids[:MAX_MODELS]))
        out = [r for r in results if r is not None]
        if ids and not out:
            raise EngineParseError("missing", f"none of the {len(ids[:MAX_MODELS])} loaded models answered")
        return out

    async def _fetch(self, session: aiohttp.ClientSession, url: str) -> bytes:
        # never follow redirects: an engine (or a pod annotation) must not point us elsewhere
        async with session.get(url, headers={"Accept": "text/plain"}, allow_redirects=False) as resp:
            if resp.status != 200:
                raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
            chunks, size = [], 0
            async for chunk in resp.content.iter_chunked(65536):
                size += len(chunk)
                if size > self.max_bytes:
                    raise TooLarge()
                chunks.append(chunk)
        return b"".join(chunks)

    def _fail(self, t: Target, st: ScrapeState, kind: str, detail: str) -> None:
        if st.up or not st.errors:
            log.warning("engine %s at %s: scrape failed (%s: %s)", t.engine, t.url, kind, detail)
        st.up = False
        st.errors[kind] = st.errors.get(kind, 0) + 1
        # back off: a target that keeps failing (nothing listens, a body too large, garbage) is
        # read after 2, 4, 8 … intervals, at most BACKOFF_MAX_S: posing as servers costs little
        st.failing += 1
        st.next_at = time.monotonic() + min(BACKOFF_MAX_S, self.interval_s * 2 ** min(st.failing - 1, 16)) \
            if st.failing > 1 else 0.0
        key = self._bounded(self.error_totals, (t.workload.namespace, t.workload.endpoint, t.engine, kind))
        self.error_totals[key] = self.error_totals.get(key, 0) + 1

    @staticmethod
    def _bounded(series: dict, key: tuple) -> tuple:
        """``key``, or past MAX_ERROR_SERIES distinct keys its overflow key (namespace "",
        endpoint "overflow"): every series of the scraper is bounded, whoever runs engines."""
        if key in series or len(series) < MAX_ERROR_SERIES:
            return key
        return ("", "overflow", *key[2:])

    def contribute(self, snap: Any) -> None:
        """The scraper's own series: one ``up`` per target, errors and counter resets."""
        for t, st in list(self.states.items()):
            w = t.workload
            snap.set("engine_scrape_up", (w.namespace, w.endpoint, w.model, t.engine), 1.0 if st.up else 0.0)
        for labels, n in list(self.error_totals.items()):
            snap.set("engine_scrape_errors_total", labels, float(n))
        for labels, n in list(self.resets.items()):
            snap.set("engine_restarts_total", labels, float(n))

    def up_urls(self) -> set[str]:
        """The targets that answered at their last scrape (for the target finder's admission)."""
        return {t.url for t, st in list(self.states.items()) if st.up}

    def served_models(self) -> dict[Workload, frozenset[str]]:
        """Workload → the models its engines reported in their latest good scrapes (called by the
        sampler thread: one C-level copy of the dict, then plain reads)."""
        out: dict[Workload, frozenset[str]] = {}
        for t, models in list(self.served.items()):
            out[t.workload] = out.get(t.workload, frozenset()) | models
        return out

    def drain(self) -> list[Increment]:
        out = []
        while True:
            try:
                out.append(self.out.get_nowait())
            except queue.Empty:
                return out


class TooLarge(Exception):
    pass


def _decode_parse(engine: str, body: bytes) -> Any:
    """Runs on the parser thread: decoding a 20 MB body is work too."""
    return READERS[engine].parse(body.decode("utf-8", "replace"))
