"""IntensityService: fallback order, back-off, average vs marginal, stats, logs and secrets."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from fakes.carbon_apis import EM_TOKEN, RETRY_AFTER_S, WT_PASSWORD, WT_USER, async_test, fake_apis

from exporter.carbon.intensity import Current, IntensityService
from exporter.carbon.providers import ElectricityMaps, Provider, ProviderError, Reading, Secret, WattTime

STATIC = (475.0, "IEA 2019 world average")


@dataclass(kw_only=True, eq=False)
class Scripted(Provider):
    """Answers from a script: a (g/kWh, observed_at[, signal]) tuple or a ProviderError kind;
    the last entry repeats."""

    key = "scripted"
    source = "test script"
    script: list = field(default_factory=list)
    calls: int = 0

    async def fetch(self, session: aiohttp.ClientSession) -> list[Reading]:
        step = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if isinstance(step, str):
            raise ProviderError(step, "scripted failure")
        grams, observed, *signal = step
        return [Reading(self.name, "Z", signal[0] if signal else "average", grams, observed)]


class Clock:
    def __init__(self, t: float = 10_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def service(providers: Iterable[Provider], clock: Clock | None = None, **kw) -> IntensityService:
    kw.setdefault("rng", random.Random(1))
    return IntensityService(list(providers), *STATIC, clock=clock or Clock(), **kw)


@async_test
async def test_fallback_live_then_last_good_until_max_age_then_static() -> None:
    clock = Clock()
    p = Scripted(name="live", script=[(200.0, clock.t - 10), "http_5xx"])
    svc = service([p], clock, max_age_s=3600)
    assert svc.current() == Current(475.0, "static", "", "average", 0.0, STATIC[1])  # before any poll
    await svc.poll_once()
    assert svc.current() == Current(200.0, "live", "Z", "average", 10.0, "test script")
    clock.t += 1800
    await svc.poll_once()  # fails: the last good reading stands
    assert (svc.current().provider, svc.current().age_s) == ("live", 1810.0)
    clock.t += 1790  # age 3600: still usable
    assert svc.current().provider == "live"
    clock.t += 1
    assert svc.current().provider == "static"


@async_test
async def test_providers_are_tried_in_order() -> None:
    clock = Clock()
    first = Scripted(name="first", script=[(100.0, clock.t - 5000)])  # older than max_age
    second = Scripted(name="second", script=[(300.0, clock.t - 60)])
    svc = service([first, second], clock, max_age_s=3600)
    await svc.poll_once()
    assert svc.current().provider == "second"
    first.script = [(110.0, clock.t)]
    await svc.poll_once()
    assert (svc.current().provider, svc.current().grams_per_kwh) == ("first", 110.0)


@async_test
async def test_marginal_is_never_the_average() -> None:
    clock = Clock()
    moer = Scripted(name="moer", script=[(900.0, clock.t, "marginal")])
    avg = Scripted(name="avg", script=[(250.0, clock.t)])
    svc = service([moer], clock)
    await svc.poll_once()
    assert svc.current("average").provider == "static"
    assert svc.current("marginal").grams_per_kwh == 900.0
    assert [r.signal for r in svc.readings()] == ["marginal"]
    svc = service([moer, avg], clock)  # a marginal provider listed first still loses
    await svc.poll_once()
    assert (svc.current().provider, svc.current().grams_per_kwh) == ("avg", 250.0)
    assert service([avg], clock).current("marginal") is None  # no static marginal value
    with pytest.raises(ValueError):
        svc.current("median")


@async_test
async def test_back_off_has_no_tight_loop_and_recovers() -> None:
    failing = Scripted(name="failing", script=["http_5xx"])
    healthy = Scripted(name="healthy", script=[(200.0, 10_000.0)])
    svc = service([failing, healthy], poll_interval_s=0.1, backoff_initial_s=0.02, backoff_max_s=0.16)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(svc.run(), 0.6)
    # delays ≥ half of 0.02, 0.04, 0.08, 0.16, 0.16…: at most ~9 fetches in 0.6 s, not thousands
    assert 3 <= failing.calls <= 9, failing.calls
    assert 3 <= healthy.calls <= 7, healthy.calls  # every 0.1 s
    stats = svc.stats()
    assert stats["failing"]["errors"] == {"http_5xx": failing.calls} and not stats["failing"]["up"]
    assert stats["healthy"]["successes"] == healthy.calls and stats["healthy"]["errors"] == {}
    assert stats["healthy"]["last_success"] == 10_000.0 and stats["failing"]["last_success"] is None


@async_test
async def test_retry_after_is_honoured(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(EM_TOKEN)
    async with fake_apis() as apis:
        apis.em.mode = "rate_limited"
        em = ElectricityMaps(zone="DE", token=Secret(file=token), base_url=apis.em.url)
        svc = service([em], backoff_initial_s=0.01, backoff_max_s=0.02)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(svc.run(), 0.5)
    assert len(apis.em.requests) == 1  # the next try waits RETRY_AFTER_S, not the 0.01 s back-off
    assert svc.stats()["electricitymaps"]["errors"] == {"rate_limited": 1}
    assert RETRY_AFTER_S > 0.5


@async_test
async def test_one_log_line_per_state_change(caplog: pytest.LogCaptureFixture) -> None:
    p = Scripted(name="flappy", script=["timeout", "http_5xx", "stale", (200.0, 10_000.0), (200.0, 10_000.0), "auth"])
    svc = service([p])
    with caplog.at_level(logging.DEBUG, logger="exporter.carbon.intensity"):
        for _ in range(8):
            await svc.poll_once()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines  # failing, up again, failing
    assert "failing" in lines[0] and "up again" in lines[1] and "auth" in lines[2]
    assert svc.stats()["flappy"]["errors"] == {"timeout": 1, "http_5xx": 1, "stale": 1, "auth": 3}
    assert svc.stats()["flappy"]["failures_in_a_row"] == 3


@async_test
async def test_adapter_bugs_are_counted_not_raised() -> None:
    class Broken(Scripted):
        async def fetch(self, session: aiohttp.ClientSession) -> list[Reading]:
            raise KeyError("boom")

    svc = service([Broken(name="broken")])
    await svc.poll_once()
    assert svc.stats()["broken"]["errors"] == {"internal": 1}


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        service([Scripted(name="a"), Scripted(name="a")])
    with pytest.raises(ValueError):
        IntensityService([], float("nan"), "x")
    with pytest.raises(ValueError):
        IntensityService([], 400, "x", poll_interval_s=0)


@async_test
async def test_secrets_never_reach_logs_reprs_stats_or_readings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "em").write_text(EM_TOKEN)
    (tmp_path / "wt").write_text(WT_PASSWORD)
    async with fake_apis() as apis:
        em = ElectricityMaps(zone="DE", token=Secret(file=tmp_path / "em"), base_url=apis.em.url)
        wt = WattTime(
            region="CAISO_NORTH", username=WT_USER, password=Secret(file=tmp_path / "wt"), base_url=apis.wt.url
        )
        svc = service([em, wt], max_age_s=1e12)
        with caplog.at_level(logging.DEBUG):
            for mode in ("ok", "unauthorized", "ok"):  # the fakes echo credentials in their 401s
                apis.em.mode = apis.wt.mode = mode
                await svc.poll_once()
        tokens = [apis.wt.tokens, {f"jwt-{i}-9c4e" for i in range(1, apis.wt.logins + 1)}]
    assert svc.current().provider == "electricitymaps" and svc.current("marginal").provider == "watttime"
    seen = "\n".join(
        [caplog.text, repr(svc), repr(em), repr(wt), str(svc.stats()), str(svc.readings()), str(svc.current())]
    )
    assert "401" in caplog.text  # the failures were logged…
    for value in [EM_TOKEN, WT_PASSWORD, *set().union(*tokens)]:  # …without any credential
        assert value not in seen
