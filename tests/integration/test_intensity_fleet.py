"""One intensity fetch per cluster (issue 16): a fake Electricity Maps on 127.0.0.1 counting its
calls, one real `wattprint intensity` polling it for two zones, and N node-side consumers of the
service: real `wattprint serve` processes (simulated GPUs) and in-process IntensityServices with
the `wattprint` provider. The API sees at most one call per zone per poll interval whatever N;
the nodes price with the service's value; when the service stops they fall back to their
bundled value, visibly."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from fakes.carbon_apis import EM_TOKEN, ElectricityMapsFake
from fakes.server import Background
from support import SIM, parse_metrics, start_daemon, value

pytestmark = pytest.mark.integration

POLL_S = 2.0  # the service's poll interval
WINDOW_S = 10.0
REAL_NODES = 2
IN_PROCESS_NODES = 6


def wait_for(get, check, timeout: float = 20.0, what: str = ""):
    deadline = time.time() + timeout
    while True:
        got = get()
        if check(got):
            return got
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


async def consumers(url: str, zones: list[str], seconds: float) -> list:
    """In-process nodes (the daemon's own IntensityService with the wattprint provider)."""
    import aiohttp

    from exporter.carbon.intensity import IntensityService
    from exporter.carbon.providers import WattprintService

    nodes = [IntensityService([WattprintService(url=url, zone=zones[i % len(zones)], poll_interval_s=0.25)],
                              475.0, "world average", max_age_s=60) for i in range(IN_PROCESS_NODES)]
    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(n.run(session)) for n in nodes]
        await asyncio.sleep(seconds)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return nodes


def test_one_fetch_per_zone_per_poll_interval_whatever_the_node_count(tmp_path):
    api = Background(ElectricityMapsFake())
    api.fake.value = 321.0
    env = {"EM_TOKEN": EM_TOKEN}
    svc_cfg = tmp_path / "intensity.yaml"
    svc_cfg.write_text(f"""
carbon:
  providers:
    - {{type: electricitymaps, name: em-de, zone: DE, token_env: EM_TOKEN, base_url: "{api.fake.url}",
       forecast: true, poll_interval_s: {POLL_S}}}
    - {{type: electricitymaps, name: em-fr, zone: FR, token_env: EM_TOKEN, base_url: "{api.fake.url}",
       forecast: true, poll_interval_s: {POLL_S}}}
""")
    daemons = []
    service = None
    try:
        service = start_daemon(tmp_path, f"--config.file={svc_cfg}", env=env, command="intensity")
        node_cfg = tmp_path / "node.yaml"
        node_cfg.write_text(f"""
carbon:
  region: DE
  providers: [{{type: wattprint, url: "{service.url}", zone: DE, poll_interval_s: 0.5}}]
""")
        for _ in range(REAL_NODES):
            daemons.append(start_daemon(tmp_path, "--gpu.backend=simulated", f"--gpu.simulation-file={SIM / 'two-endpoints.yaml'}",
                                        "--sample.interval=0.5s", "--engines.enabled=false", "--carbon.max-age=6s",
                                        f"--config.file={node_cfg}"))
        t0 = time.time()
        before = {z: sum(1 for p, q in api.fake.requests if p.endswith("/latest") and q["zone"] == z)
                  for z in ("DE", "FR")}
        nodes = asyncio.run(consumers(service.url, ["DE", "FR"], WINDOW_S))
        elapsed = time.time() - t0
        node_metrics = [parse_metrics(d.get()) for d in daemons]
        svc_metrics = parse_metrics(service.get())
        latest = {z: sum(1 for p, q in api.fake.requests if p.endswith("/latest") and q["zone"] == z) - before[z]
                  for z in ("DE", "FR")}
        forecasts = api.fake.calls("/v3/carbon-intensity/forecast")

        # the API: one call per zone per poll interval, however many nodes asked the service
        allowed = math.ceil(elapsed / POLL_S) + 1
        node_calls = sum(st["calls"] for n in nodes for st in n.stats().values()) + \
            sum(value(m, "wattprint_intensity_provider_calls_total", provider="wattprint") for m in node_metrics)
        print(f"\n{REAL_NODES + IN_PROCESS_NODES} nodes, poll {POLL_S:g} s, {elapsed:.1f} s: "
              f"Electricity Maps latest calls {latest}, forecast calls {forecasts}, node requests to the service "
              f"{node_calls:.0f}")
        for zone, n in latest.items():
            assert 1 <= n <= allowed, (zone, n, allowed)
        assert forecasts == 2  # one per zone: the forecast is read at most hourly
        assert node_calls > 10 * sum(latest.values())
        assert value(svc_metrics, "wattprint_intensity_provider_calls_total", provider="em-de") == \
            sum(1 for p, q in api.fake.requests if q.get("zone") == "DE")
        for h in ("1h", "6h", "24h"):
            assert value(svc_metrics, "wattprint_grid_intensity_forecast_grams_per_kwh", zone="DE", horizon=h) > 0

        # the nodes price with the service's value
        for n in nodes:
            cur = n.current()
            assert (cur.provider, cur.grams_per_kwh) == ("wattprint", 321.0)
        for m in node_metrics:
            assert value(m, "wattprint_carbon_info", provider="wattprint", zone="DE") == 1
            assert value(m, "wattprint_grid_intensity_grams_per_kwh", provider="wattprint", signal="average") == 321.0
            assert value(m, "wattprint_collector_up", collector="intensity_wattprint") == 1

        # the service stops: the nodes fall back to their bundled value (DE), visibly
        service.stop()
        service = None
        for d in daemons:
            m = wait_for(lambda: parse_metrics(d.get()),
                         lambda m: value(m, "wattprint_carbon_info", provider="static") == 1,
                         timeout=20, what="static fallback")
            assert value(m, "wattprint_collector_up", collector="intensity_wattprint") == 0
            assert value(m, "wattprint_collector_errors_total", collector="intensity_wattprint", kind="network") >= 1
            static = value(m, "wattprint_grid_intensity_grams_per_kwh", provider="static")
            assert static != 321.0 and 100 < static < 800
    finally:
        for d in daemons:
            d.stop()
        if service is not None:
            service.stop()
        api.close()
