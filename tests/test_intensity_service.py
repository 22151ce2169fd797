"""One intensity fetch per cluster (issue 16, part 3): forecasts read from the fakes' documented
shapes, the `wattprint intensity` service's answers (JSON API and /metrics), and the node-side
`wattprint` provider against a real service on 127.0.0.1, including its garbage, wrong zones and
hangs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from fakes.carbon_apis import EM_TOKEN, RETRY_AFTER_S, async_test, fake_apis

from exporter.carbon.intensity import IntensityService
from exporter.carbon.providers import (
    PROVIDERS,
    ElectricityMaps,
    FileProvider,
    ProviderError,
    Secret,
    UKCarbonIntensity,
    WattprintService,
    build,
)
from exporter.intensity_server import IntensityServer, at_horizon, listen_address
from support import PROMTOOL, parse_metrics, promtool_lint, value

FAST = {"timeout_s": 0.3}


def em(apis, tmp_path: Path, **kw) -> ElectricityMaps:
    (tmp_path / "em").write_text(EM_TOKEN)
    return ElectricityMaps(zone="DE", token=Secret(file=tmp_path / "em"), base_url=apis.em.url, forecast=True,
                           **{**FAST, **kw})


async def fetch(provider) -> list:
    async with aiohttp.ClientSession() as session:
        return await provider.fetch(session)


async def fetch_error(provider) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await fetch(provider)
    return info.value


# --- forecasts --------------------------------------------------------------------------------


@async_test
async def test_electricitymaps_forecast_is_read_hourly_at_most(tmp_path: Path) -> None:
    now = [time.time()]
    async with fake_apis() as apis:
        apis.em.forecast_value = lambda i: 100.0 + 10 * i
        p = em(apis, tmp_path, clock=lambda: now[0])
        [r] = await fetch(p)
        assert r.grams_per_kwh == 300.0 and len(r.forecast) == 25
        assert [g for _, g in r.forecast[:3]] == [300.0, 110.0, 120.0]
        assert all(b[0] - a[0] == 3600 for a, b in zip(r.forecast, r.forecast[1:]))
        assert apis.em.requests[-1] == ("/v3/carbon-intensity/forecast", {"zone": "DE", "emissionFactorType": "lifecycle"})
        await fetch(p)
        now[0] += 1800
        await fetch(p)
        assert (apis.em.calls("/v3/carbon-intensity/latest"), apis.em.calls("/v3/carbon-intensity/forecast")) == (3, 1)
        assert p.calls == 4
        now[0] += 1801  # an hour after the last forecast call
        [r2] = await fetch(p)
        assert apis.em.calls("/v3/carbon-intensity/forecast") == 2
        assert r2.forecast[0][0] >= now[0] - 3600  # points over an hour old are dropped


@pytest.mark.parametrize("mode", ["server_error", "malformed", "bad_shape", "negative", "nan", "hang", "rate_limited"])
@async_test
async def test_a_failing_forecast_keeps_the_current_value_and_the_last_forecast(mode: str, tmp_path: Path) -> None:
    now = [time.time()]
    async with fake_apis() as apis:
        p = em(apis, tmp_path, clock=lambda: now[0], forecast_every_s=10)
        [first] = await fetch(p)
        apis.em.forecast_mode = mode
        now[0] += 11
        [r] = await fetch(p)
    assert r.grams_per_kwh == 300.0
    assert r.forecast == tuple(pt for pt in first.forecast if pt[0] >= now[0] - 3600)


@async_test
async def test_electricitymaps_forecast_for_another_zone_is_refused(tmp_path: Path) -> None:
    async with fake_apis() as apis:
        p = em(apis, tmp_path)
        apis.em.answer_zone = "FR"
        assert (await fetch_error(p)).kind == "zone_not_found"


@async_test
async def test_uk_fw24h_gives_current_value_and_forecast_in_one_call() -> None:
    async with fake_apis() as apis:
        apis.uk.forecast_value = lambda i: 50.0 + i
        p = UKCarbonIntensity(base_url=apis.uk.url, forecast=True, **FAST)
        [r] = await fetch(p)
        assert len(apis.uk.requests) == 1 and apis.uk.requests[0][0].endswith("/fw24h")
        stamp = apis.uk.requests[0][0].split("/")[2]
        assert stamp.endswith(("00Z", "30Z")) and len(stamp) == len("2018-01-20T12:00Z")
        assert (r.zone, r.grams_per_kwh) == ("GB", 180.0)
        assert r.observed_at <= time.time() < r.observed_at + 1800
        assert len(r.forecast) == 48 and r.forecast[1][1] == 51.0
        apis.uk.with_actual = False
        apis.uk.value = 211.0
        [r] = await fetch(p)
        assert r.grams_per_kwh == 211.0
        for mode, kind in (("stale", "stale"), ("negative", "implausible"), ("bad_shape", "malformed"),
                           ("hang", "timeout"), ("rate_limited", "rate_limited")):
            apis.uk.mode = mode
            err = await fetch_error(p)
            assert err.kind == kind, (mode, err)
            assert err.retry_after_s == (RETRY_AFTER_S if kind == "rate_limited" else None)
    with pytest.raises(ValueError):
        UKCarbonIntensity(region_id=1, forecast=True)


def test_at_horizon_picks_the_period_holding_now_plus_h() -> None:
    now = 1_000_000.0
    hourly = tuple((now - 600 + 3600 * i, 100.0 + i) for i in range(25))
    assert at_horizon(hourly, now, 3600) == 101.0
    assert at_horizon(hourly, now, 6 * 3600) == 106.0
    assert at_horizon(hourly, now, 24 * 3600) == 124.0
    assert at_horizon(hourly[:6], now, 24 * 3600) is None  # does not reach that far
    assert at_horizon((), now, 3600) is None


# --- the service and the node provider ---------------------------------------------------------


class Service:
    """A real IntensityServer over a real IntensityService with a file provider (no third party:
    the value is the operator's), served by aiohttp on 127.0.0.1."""

    def __init__(self, tmp_path: Path, zone: str = "DE", value: float = 123.0, max_age_s: float = 3600) -> None:
        self.file = tmp_path / "intensity.yaml"
        self.write(zone, value)
        self.intensity = IntensityService([FileProvider(path=str(self.file), zone=zone)], 400.0, "static",
                                          max_age_s=max_age_s)
        self.server = IntensityServer(self.intensity)
        self.http = TestServer(self.server.make_app(), host="127.0.0.1")

    def write(self, zone: str, value: float, observed_at: float | None = None) -> None:
        when = f"observed_at: {observed_at}\n" if observed_at is not None else ""
        self.file.write_text(f"grams_per_kwh: {value}\nzone: {zone}\n{when}")

    @property
    def url(self) -> str:
        return str(self.http.make_url("")).rstrip("/")

    async def get(self, path: str) -> tuple[int, object]:
        async with aiohttp.ClientSession() as s, s.get(self.url + path) as r:
            return r.status, await (r.json() if r.content_type == "application/json" else r.text())


@async_test
async def test_service_answers_nodes_and_exposes_metrics(tmp_path: Path) -> None:
    svc = Service(tmp_path)
    await svc.http.start_server()
    try:
        assert (await svc.get("/readyz"))[0] == 503
        assert (await svc.get("/api/v1/intensity?zone=DE"))[0] == 503  # not polled yet
        await svc.intensity.poll_once()
        assert (await svc.get("/readyz"))[0] == 200 and (await svc.get("/healthz"))[0] == 200
        status, body = await svc.get("/api/v1/intensity?zone=DE")
        assert status == 200, body
        assert body["zone"] == "DE" and body["provider"] == "file" and body["grams_per_kwh"] == 123.0
        assert body["signal"] == "average" and body["observed_at"].endswith("Z") and body["forecast"] == []
        assert (await svc.get("/api/v1/zones")) == (200, {"zones": ["DE"]})
        assert (await svc.get("/api/v1/intensity?zone=FR"))[0] == 404
        assert (await svc.get("/api/v1/intensity"))[0] == 400
        assert (await svc.get("/api/v1/intensity?zone=DE&signal=median"))[0] == 400
        assert (await svc.get("/api/v1/intensity?zone=DE&signal=marginal"))[0] == 404
        status, text = await svc.get("/metrics")
        m = parse_metrics(text)
        assert value(m, "wattprint_grid_intensity_grams_per_kwh", zone="DE", provider="file") == 123.0
        assert value(m, "wattprint_collector_up", collector="intensity_file") == 1
        assert "wattprint_intensity_provider_calls_total" in text
        if PROMTOOL is not None:
            assert promtool_lint(text) == ""
    finally:
        await svc.http.close()


@async_test
async def test_service_metrics_carry_the_forecast_at_each_horizon(tmp_path: Path) -> None:
    async with fake_apis() as apis:
        apis.em.forecast_value = lambda i: 100.0 + i
        svc = IntensityService([em(apis, tmp_path)], 400.0, "static")
        await svc.poll_once()
        text = IntensityServer(svc).renderer.render(IntensityServer(svc).snapshot()).text.decode()
        status, body = IntensityServer(svc).answer("DE", "average")
    m = parse_metrics(text)
    fc = "wattprint_grid_intensity_forecast_grams_per_kwh"
    assert {value(m, fc, horizon=h, zone="DE", provider="electricitymaps") for h in ("1h", "6h", "24h")} == \
        {101.0, 106.0, 124.0}
    assert value(m, "wattprint_intensity_provider_calls_total", provider="electricitymaps") == 2
    assert status == 200 and len(body["forecast"]) == 25 and body["forecast"][1]["grams_per_kwh"] == 101.0


@async_test
async def test_node_provider_reads_the_service(tmp_path: Path) -> None:
    svc = Service(tmp_path, value=222.0)
    await svc.http.start_server()
    try:
        await svc.intensity.poll_once()
        node = WattprintService(url=svc.url, zone="DE", **FAST)
        [r] = await fetch(node)
        assert (r.provider, r.zone, r.signal, r.grams_per_kwh) == ("wattprint", "DE", "average", 222.0)
        assert node.calls == 1 and node.poll_interval_s == 60.0
        assert (await fetch_error(WattprintService(url=svc.url, zone="FR", **FAST))).kind == "zone_not_found"
        # the service's reading goes stale there: 503, then the node's own max_age rules
        svc.write("DE", 222.0, observed_at=time.time() - 5000)
        stale = IntensityService([FileProvider(path=str(svc.file), zone="DE")], 400.0, "s", max_age_s=3600)
        await stale.poll_once()
        svc.server.service = stale
        assert (await fetch_error(node)).kind == "http_5xx"
    finally:
        await svc.http.close()
    assert (await fetch_error(node)).kind == "network"  # the service is gone


IMPOSTOR_ANSWERS = {  # what a broken or mis-routed service might answer → the kind the node reports
    "garbage": (200, "not json at all", "malformed"),
    "shape": (200, {"intensity": 1}, "malformed"),
    "zone": (200, {"zone": "FR", "signal": "average", "grams_per_kwh": 100, "observed_at": "now"}, "zone_not_found"),
    "signal": (200, {"zone": "DE", "signal": "marginal", "grams_per_kwh": 100, "observed_at": 0}, "malformed"),
    "absurd": (200, {"zone": "DE", "signal": "average", "grams_per_kwh": 1e6, "observed_at": time.time()},
               "implausible"),
    "old": (200, {"zone": "DE", "signal": "average", "grams_per_kwh": 100, "observed_at": "2020-01-01T00:00:00Z"},
            "stale"),
    "string": (200, {"zone": "DE", "signal": "average", "grams_per_kwh": "100", "observed_at": 0}, "malformed"),
    "redirect": (302, "", "http_4xx"),
    "hang": (None, None, "timeout"),
}


@pytest.mark.parametrize("case", IMPOSTOR_ANSWERS)
@async_test
async def test_node_provider_validates_the_answer(case: str) -> None:
    """A server on the service's address that answers wrongly (an old version, another
    service behind a mis-set Service, a hung pod) is refused like any provider's bad answer."""
    status, body, kind = IMPOSTOR_ANSWERS[case]

    async def handler(request: web.Request) -> web.StreamResponse:
        if status is None:
            await asyncio.sleep(5)
        if status == 302:
            raise web.HTTPFound("/elsewhere")
        return web.json_response(body) if not isinstance(body, str) else web.Response(text=body)

    app = web.Application()
    app.router.add_get("/api/v1/intensity", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        err = await fetch_error(WattprintService(url=str(server.make_url("")), zone="DE", timeout_s=0.3))
    finally:
        await server.close()
    assert err.kind == kind, err


@async_test
async def test_node_falls_back_to_static_when_the_service_fails(tmp_path: Path) -> None:
    """The node's IntensityService with the wattprint provider: live while the service answers,
    the last good value until max_age, then its own static value; the failures counted."""
    now = [time.time()]
    svc = Service(tmp_path, value=150.0)
    await svc.http.start_server()
    await svc.intensity.poll_once()
    node = IntensityService([WattprintService(url=svc.url, zone="DE", **FAST)], 381.0, "bundled DE",
                            max_age_s=600, clock=lambda: now[0], static_zone="DE")
    await node.poll_once()
    assert (node.current().provider, node.current().grams_per_kwh) == ("wattprint", 150.0)
    await svc.http.close()
    await node.poll_once()
    assert node.current().provider == "wattprint"  # last good value, younger than max_age
    now[0] += 601
    cur = node.current()
    assert (cur.provider, cur.grams_per_kwh, cur.source) == ("static", 381.0, "bundled DE")
    st = node.stats()["wattprint"]
    assert st["up"] is False and st["errors"] == {"network": 1} and st["calls"] == 2


def test_registry_config_and_listen_address(tmp_path: Path) -> None:
    from exporter import config

    assert PROVIDERS["wattprint"] is WattprintService
    p = build("wattprint", url="http://wattprint-intensity:10067", zone="DE", poll_interval_s=30)
    assert p.poll_interval_s == 30 and p.name == "wattprint"
    for bad in ({"url": "ftp://x", "zone": "DE"}, {"url": "http://x", "zone": "DE", "signal": "median"}):
        with pytest.raises(ValueError):
            build("wattprint", **bad)
    bad = tmp_path / "bad.yaml"
    bad.write_text("carbon:\n  providers: [{type: wattprint, url: 'http://x', zone: DE, calls: 3}]\n")
    with pytest.raises(config.ConfigError, match="unknown option"):  # a counter, not an option
        config.load(str(bad), environ={})
    assert listen_address(config.load(environ={})) == ":10067"
    assert listen_address(config.load(flags={("web", "listen_address"): ":9000"}, environ={})) == ":9000"
