"""Hard bounds on what local inference servers (or processes posing as one) can cost the scraper
(issue 14 #1, #2, #5): parsing off the serving loop and bounded per body, models and state per
target, scrapes in flight, targets at once and new targets a minute, and every self-metric
series. Real aiohttp servers on 127.0.0.1 play the engines."""

from __future__ import annotations

import asyncio
import threading

import aiohttp
import pytest
from aiohttp import web

from exporter import engine_scraper
from exporter.engine_scraper import CONCURRENCY, MAX_ERROR_SERIES, MAX_MODELS_PER_TARGET, EngineScraper
from exporter.engine_targets import Target, TargetFinder
from exporter.engines import READERS
from exporter.engines.base import MAX_SERIES_PER_FAMILY
from exporter.exposition import Snapshot
from exporter.identity.resolver import Workload


def vllm_body(models: int, finished: int = 1) -> str:
    lines = ["# HELP vllm:request_success_total Count of successfully processed requests.",
             "# TYPE vllm:request_success_total counter"]
    lines += [f'vllm:request_success_total{{engine="0",finished_reason="stop",model_name="m{i}"}} {finished}'
              for i in range(models)]
    return "\n".join(lines) + "\n"


async def serve(handler) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_get("/metrics", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


def target(port: int, endpoint: str = "hostile") -> Target:
    return Target(Workload("", endpoint, ""), "vllm", f"http://127.0.0.1:{port}/metrics", "")


async def scrape(scraper: EngineScraper) -> None:
    async with aiohttp.ClientSession() as session:
        await scraper.scrape_all(session)


def run(coro):
    return asyncio.run(coro)


def test_a_body_with_250000_model_names_is_refused_unparsed_and_leaves_no_state():
    """Old: ~19 MB with 250,000 model_name series was parsed on the serving loop (p99 9.6 s) and
    its normaliser state (one key per model) was kept for ever (RSS 64 → 478 MB)."""
    body = vllm_body(250_000)
    assert len(body) > 19e6

    async def main():
        async def handler(request):
            return web.Response(text=body)
        runner, port = await serve(handler)
        t = target(port)
        scraper = EngineScraper(lambda: [t], max_bytes=32 * 1024 * 1024)
        await scrape(scraper)
        await runner.cleanup()
        return scraper, t
    scraper, t = run(main())
    assert scraper.states[t].errors == {"parse_malformed": 1}  # the family is "too many series"
    assert len(scraper.normaliser) == 0 and scraper.drain() == []


def test_more_models_than_the_bound_is_refused_whole():
    async def main():
        async def handler(request):
            return web.Response(text=vllm_body(MAX_MODELS_PER_TARGET + 1))
        runner, port = await serve(handler)
        t = target(port)
        scraper = EngineScraper(lambda: [t])
        await scrape(scraper)
        await runner.cleanup()
        return scraper, t
    scraper, t = run(main())
    assert MAX_MODELS_PER_TARGET + 1 <= MAX_SERIES_PER_FAMILY
    assert scraper.states[t].errors == {"too_many_models": 1}
    assert len(scraper.normaliser) == 0 and not scraper.served


def test_parsing_runs_off_the_event_loop_thread(monkeypatch):
    seen = []
    real = READERS["vllm"].parse

    class Spy:
        engine, metrics_path = "vllm", "/metrics"

        def parse(self, text):
            seen.append(threading.current_thread().name)
            return real(text)
    monkeypatch.setitem(READERS, "vllm", Spy())

    async def main():
        async def handler(request):
            return web.Response(text=vllm_body(3))
        runner, port = await serve(handler)
        t = target(port)
        scraper = EngineScraper(lambda: [t])
        await scrape(scraper)
        await runner.cleanup()
        return threading.current_thread().name
    loop_thread = run(main())
    assert seen and all(name.startswith("engine-parse") and name != loop_thread for name in seen)


def test_state_of_a_target_that_is_gone_is_dropped():
    async def main():
        async def handler(request):
            return web.Response(text=vllm_body(5))
        runner, port = await serve(handler)
        current = [target(port)]
        scraper = EngineScraper(lambda: current)
        await scrape(scraper)
        held = len(scraper.normaliser)
        current.clear()
        await scrape(scraper)
        await runner.cleanup()
        return scraper, held
    scraper, held = run(main())
    assert held == 5 and len(scraper.normaliser) == 0 and not scraper.states and not scraper.served


def test_scrapes_in_flight_are_bounded():
    """Old: every target fetched at once (30 fake engines → 619 MB)."""
    in_flight = {"now": 0, "max": 0}

    async def main():
        async def handler(request):
            in_flight["now"] += 1
            in_flight["max"] = max(in_flight["max"], in_flight["now"])
            await asyncio.sleep(0.05)
            in_flight["now"] -= 1
            return web.Response(text=vllm_body(1))
        runner, port = await serve(handler)
        targets = [Target(Workload("", f"e{i}", ""), "vllm", f"http://127.0.0.1:{port}/metrics?i={i}", "")
                   for i in range(30)]
        scraper = EngineScraper(lambda: targets)
        await scrape(scraper)
        await runner.cleanup()
        return scraper
    scraper = run(main())
    assert all(st.up for st in scraper.states.values()) and len(scraper.states) == 30
    assert in_flight["max"] <= CONCURRENCY


def test_error_series_are_bounded_whoever_runs_engines():
    """Old: 300 fake engines gave 300 series of each engine self-metric, past any cap."""
    scraper = EngineScraper(lambda: [])
    for i in range(MAX_ERROR_SERIES + 300):
        t = Target(Workload("ns", f"e{i}", ""), "vllm", f"http://127.0.0.1:1/{i}", "")
        scraper._fail(t, engine_scraper.ScrapeState(), "connect", "refused")
    snap = Snapshot()
    scraper.contribute(snap)
    errors = snap.values["engine_scrape_errors_total"]
    assert len(errors) == MAX_ERROR_SERIES + 1
    assert errors[("", "overflow", "vllm", "connect")] == 300
    assert sum(errors.values()) == MAX_ERROR_SERIES + 300  # every error counted


class _Resolver:
    def pod_of(self, p):
        return None

    def resolve(self, pid, procs, on_gpu=False):
        return Workload("", f"vllm-{procs[pid].port}", "")


def _procs(ports):
    from types import SimpleNamespace

    return {i: SimpleNamespace(pid=i, ppid=1, comm="vllm", cmdline=("vllm", "serve", "m", "--port", str(p)),
                               environ=None, cgroup="", starttime=1, port=p) for i, p in enumerate(ports, 10)}


def test_targets_at_once_and_new_targets_a_minute_are_bounded_and_counted():
    """A local user starting processes named vllm serve --port P cannot make the daemon poll
    arbitrary ports at will: at most max_targets at once, then new_per_minute new ones a minute."""
    finder = TargetFinder(_Resolver(), max_targets=8, new_per_minute=4)
    finder.maybe_refresh(0.0, _procs(range(9000, 9100)))
    assert len(finder.targets()) == 8  # the first burst, up to the cap
    first = {t.url for t in finder.targets()}
    finder.up_urls = lambda: first  # they answer
    finder.maybe_refresh(100.0, _procs(range(9000, 9100)))
    assert {t.url for t in finder.targets()} == first  # those admitted and answering stay admitted
    finder.up_urls = frozenset  # none answers (processes posing as servers): new ones take their place
    finder.maybe_refresh(200.0, _procs(range(9000, 9100)))
    assert len({t.url for t in finder.targets()} - first) >= 6
    finder.maybe_refresh(500.0, _procs(range(10000, 10100)))  # all new ports (churn)
    assert len(finder.targets()) == 8  # the tokens refilled meanwhile
    finder.maybe_refresh(515.0, _procs(range(11000, 11100)))  # churn again, 15 s later: one token
    assert len(finder.targets()) == 1
    snap = Snapshot()
    finder.contribute(snap)
    refused = snap.values["engine_targets_refused_total"]
    assert refused[("rate",)] > 0 and refused[("max_targets",)] > 0
    assert snap.values["engine_targets"][()] == 1


def test_configured_targets_are_admitted_first_and_beyond_the_rate():
    finder = TargetFinder(_Resolver(), max_targets=3, new_per_minute=1)
    finder._tokens = 0.0  # no new target may come in: configured ones still do
    finder.static = [Target(Workload("", f"cfg{i}", ""), "vllm", f"http://10.0.0.{i}:8000/metrics", "")
                     for i in range(2)]
    finder.maybe_refresh(0.0, _procs(range(9000, 9010)))
    urls = [t.url for t in finder.targets()]
    assert urls == ["http://10.0.0.0:8000/metrics", "http://10.0.0.1:8000/metrics"]


@pytest.mark.parametrize("n", [MAX_SERIES_PER_FAMILY + 1])
def test_a_family_with_too_many_series_is_dropped_by_name(n):
    reading_error = None
    try:
        READERS["vllm"].parse(vllm_body(n))
    except Exception as e:  # noqa: BLE001
        reading_error = e
    assert reading_error is not None and "too many series" in str(reading_error)


def test_a_target_that_keeps_failing_is_read_ever_more_rarely():
    """Processes posing as servers (nothing listens, garbage, too large) cost little: after the
    second failure a target waits 2, 4, 8 … intervals (at most a minute) before its next read;
    one good answer brings it back to every interval."""
    hits = {"n": 0}
    mode = {"ok": False}

    async def main():
        async def handler(request):
            hits["n"] += 1
            return web.Response(text=vllm_body(1) if mode["ok"] else "garbage\n")
        runner, port = await serve(handler)
        t = target(port)
        scraper = EngineScraper(lambda: [t], interval_s=0.05)
        async with aiohttp.ClientSession() as session:
            for _ in range(40):  # 2 s of rounds at 0.05 s
                await scraper.scrape_all(session)
                await asyncio.sleep(0.05)
            failing_hits = hits["n"]
            mode["ok"] = True
            await asyncio.sleep(3.3)  # past the current wait (at most 3.2 s by now)
            for _ in range(5):
                await scraper.scrape_all(session)
                await asyncio.sleep(0.05)
        await runner.cleanup()
        return scraper, t, failing_hits
    scraper, t, failing_hits = run(main())
    assert failing_hits <= 8  # not 40: 0, 0.05, 0.15, 0.35, 0.75, 1.55 s …
    assert scraper.states[t].up and scraper.states[t].failing == 0
    assert hits["n"] - failing_hits >= 5  # read every round again
