"""Each live intensity provider against its fake API: the happy path, then every failure mode."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import aiohttp
import pytest
from fakes.carbon_apis import (
    EM_TOKEN,
    RETRY_AFTER_S,
    WT_PASSWORD,
    WT_USER,
    async_test,
    fake_apis,
)

from exporter.carbon.providers import (
    LBS_PER_MWH_TO_G_PER_KWH,
    PROVIDERS,
    ElectricityMaps,
    FileProvider,
    Provider,
    ProviderError,
    Secret,
    UKCarbonIntensity,
    WattTime,
    build,
)

FAST = {"timeout_s": 0.2}


def secret(tmp_path: Path, name: str, value: str) -> Secret:
    path = tmp_path / name
    path.write_text(value + "\n")
    return Secret(file=path)


# name → (which fake, how to build the provider against it, expected g/kWh, zone, signal)
SUBJECTS = {
    "electricitymaps": (
        "em",
        lambda a, tmp: ElectricityMaps(zone="DE", token=secret(tmp, "em", EM_TOKEN), base_url=a.em.url, **FAST),
        300.0,
        "DE",
        "average",
    ),
    "watttime": (
        "wt",
        lambda a, tmp: WattTime(
            region="CAISO_NORTH", username=WT_USER, password=secret(tmp, "wt", WT_PASSWORD), base_url=a.wt.url, **FAST
        ),
        1000.0 * LBS_PER_MWH_TO_G_PER_KWH,
        "CAISO_NORTH",
        "marginal",
    ),
    "ukgrid-national": ("uk", lambda a, tmp: UKCarbonIntensity(base_url=a.uk.url, **FAST), 180.0, "GB", "average"),
    "ukgrid-regional": (
        "uk",
        lambda a, tmp: UKCarbonIntensity(region_id=1, base_url=a.uk.url, **FAST),
        180.0,
        "GB-1",
        "average",
    ),
}

# failure mode of the fake → the ProviderError kind the client must raise
FAILURES = {
    "unauthorized": "auth",
    "rate_limited": "rate_limited",
    "server_error": "http_5xx",
    "hang": "timeout",
    "malformed": "malformed",
    "bad_shape": "malformed",
    "zone_not_found": "zone_not_found",
    "stale": "stale",
    "negative": "implausible",
    "absurd": "implausible",
    "nan": "implausible",
}


async def fetch(provider: Provider) -> list:
    async with aiohttp.ClientSession() as session:
        return await provider.fetch(session)


async def fetch_error(provider: Provider) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await fetch(provider)
    return info.value


def test_registry_lists_every_provider() -> None:
    assert set(PROVIDERS) == {"electricitymaps", "watttime", "ukgrid", "file", "wattprint"}
    assert all(cls.key == key and cls.source for key, cls in PROVIDERS.items())


@pytest.mark.parametrize("subject", SUBJECTS)
@async_test
async def test_reads_current_value(subject: str, tmp_path: Path) -> None:
    _, make, grams, zone, signal = SUBJECTS[subject]
    async with fake_apis() as apis:
        [reading] = await fetch(make(apis, tmp_path))
    assert (reading.zone, reading.signal) == (zone, signal)
    assert reading.grams_per_kwh == pytest.approx(grams)
    assert time.time() - 1800 <= reading.observed_at <= time.time()  # UK periods start on :00/:30


@pytest.mark.parametrize("mode,kind", FAILURES.items())
@pytest.mark.parametrize("subject", SUBJECTS)
@async_test
async def test_failure_modes(subject: str, mode: str, kind: str, tmp_path: Path) -> None:
    fake, make, *_ = SUBJECTS[subject]
    async with fake_apis() as apis:
        getattr(apis, fake).mode = mode
        err = await fetch_error(make(apis, tmp_path))
    assert err.kind == kind, err
    assert err.retry_after_s == (RETRY_AFTER_S if kind == "rate_limited" else None)
    assert EM_TOKEN not in str(err) and WT_PASSWORD not in str(err) and "jwt-" not in str(err)


@async_test
async def test_electricitymaps_request_shape_and_auth(tmp_path: Path) -> None:
    async with fake_apis() as apis:
        good = ElectricityMaps(zone="DE", token=secret(tmp_path, "em", EM_TOKEN), base_url=apis.em.url)
        await fetch(good)
        assert apis.em.requests[-1] == (
            "/v3/carbon-intensity/latest",
            {"zone": "DE", "emissionFactorType": "lifecycle", "shouldUseFallbackCallerLookup": "false"},
        )
        wrong = ElectricityMaps(zone="DE", token=secret(tmp_path, "bad", "not-the-token"), base_url=apis.em.url)
        err = await fetch_error(wrong)
        assert err.kind == "auth" and "not-the-token" not in str(err)  # the fake echoed it back
        assert (await fetch_error(ElectricityMaps(zone="XX", token=good.token, base_url=apis.em.url))).kind == (
            "zone_not_found"
        )
        apis.em.answer_zone = "FR"  # the API answered for the caller's IP zone instead
        assert (await fetch_error(good)).kind == "zone_not_found"


@async_test
async def test_watttime_logs_in_once_refreshes_before_expiry_and_on_401(tmp_path: Path) -> None:
    now = [time.time()]
    async with fake_apis() as apis:
        wt = WattTime(
            region="CAISO_NORTH",
            username=WT_USER,
            password=secret(tmp_path, "wt", WT_PASSWORD),
            base_url=apis.wt.url,
            clock=lambda: now[0],
        )
        await fetch(wt)
        await fetch(wt)
        assert apis.wt.logins == 1
        assert apis.wt.requests[-1] == (
            "/v3/forecast",
            {"region": "CAISO_NORTH", "signal_type": "co2_moer", "horizon_hours": "0"},
        )
        apis.wt.revoke_tokens()  # server-side expiry: 401, one new login, same fetch succeeds
        await fetch(wt)
        assert apis.wt.logins == 2
        now[0] += 29 * 60  # within the refresh margin of the 30-minute token
        await fetch(wt)
        assert apis.wt.logins == 3
        wrong = WattTime(
            region="CAISO_NORTH", username=WT_USER, password=secret(tmp_path, "x", "nope-pass"), base_url=apis.wt.url
        )
        err = await fetch_error(wrong)
        assert err.kind == "auth" and "nope-pass" not in str(err)
        assert "nope-pass" not in repr(wrong) and WT_PASSWORD not in repr(wt) and "jwt-" not in repr(wt)
        unknown = WattTime(region="NOWHERE", username=WT_USER, password=wt.password, base_url=apis.wt.url)
        assert (await fetch_error(unknown)).kind == "zone_not_found"


@async_test
async def test_uk_uses_forecast_until_actual_is_settled() -> None:
    async with fake_apis() as apis:
        apis.uk.with_actual = False
        apis.uk.value = 211.0
        [reading] = await fetch(UKCarbonIntensity(base_url=apis.uk.url))
        assert reading.grams_per_kwh == 211.0
        assert (await fetch_error(UKCarbonIntensity(region_id=99, base_url=apis.uk.url))).kind == "zone_not_found"


@async_test
async def test_connection_refused_is_a_network_error() -> None:
    async with fake_apis() as apis:
        url = apis.uk.url
    assert (await fetch_error(UKCarbonIntensity(base_url=url))).kind == "network"


# --- file provider -------------------------------------------------------------------------

FILES = {  # content → (g/kWh, zone, signal) or the error kind
    "grams_per_kwh: 123\nzone: DE\n": (123.0, "DE", "average"),
    json.dumps({"grams_per_kwh": 56.5}): (56.5, "local", "average"),
    "grams_per_kwh: 410\nsignal: marginal\n": (410.0, "local", "marginal"),
    "grams_per_kwh: 100\nobserved_at: 2020-01-01T00:00:00Z\n": "stale",
    "grams_per_kwh: -3\n": "implausible",
    "grams_per_kwh: .nan\n": "implausible",
    "grams_per_kwh: 2501\n": "implausible",
    "grams_per_kwh: lots\n": "malformed",
    "zone: DE\n": "malformed",
    "[1, 2": "malformed",
    "- a list\n": "malformed",
    "grams_per_kwh: 1\nsignal: median\n": "malformed",
}


@pytest.mark.parametrize("content,expected", FILES.items())
@async_test
async def test_file_provider(content: str, expected, tmp_path: Path) -> None:
    path = tmp_path / "intensity.yaml"
    path.write_text(content)
    provider = FileProvider(path=str(path), stale_after_s=86400)
    if isinstance(expected, str):
        assert (await fetch_error(provider)).kind == expected
    else:
        [r] = await provider.fetch(None)
        assert (r.grams_per_kwh, r.zone, r.signal) == expected
        assert math.isclose(r.observed_at, time.time(), abs_tol=5)


@async_test
async def test_file_provider_rereads_only_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "intensity.json"
    provider = FileProvider(path=str(path))
    assert (await fetch_error(provider)).kind == "io"
    path.write_text('{"grams_per_kwh": 100, "observed_at": 1700000000}')
    assert (await provider.fetch(None))[0].grams_per_kwh == 100.0
    stamp = path.stat().st_mtime_ns
    path.write_text('{"grams_per_kwh": 999, "observed_at": 1700000000}')
    os.utime(path, ns=(stamp, stamp))  # same mtime and size: the cached value stands
    assert (await provider.fetch(None))[0].grams_per_kwh == 100.0
    path.write_text('{"grams_per_kwh": 250, "observed_at": 1700000000}')
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))
    [r] = await provider.fetch(None)
    assert (r.grams_per_kwh, r.observed_at) == (250.0, 1700000000.0)


# --- secrets -------------------------------------------------------------------------------


def test_secret_reads_file_or_env_and_never_prints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATTPRINT_TEST_TOKEN", EM_TOKEN)
    from_env = Secret(env="WATTPRINT_TEST_TOKEN")
    assert from_env.reveal() == EM_TOKEN == secret(tmp_path, "t", EM_TOKEN).reveal()
    assert EM_TOKEN not in repr(from_env) + str(from_env)
    missing = Secret(env="WATTPRINT_TEST_UNSET")
    with pytest.raises(ProviderError) as info:
        missing.reveal()
    assert info.value.kind == "auth"
    with pytest.raises(ValueError):
        Secret()
    built = build("electricitymaps", zone="DE", token_env="WATTPRINT_TEST_TOKEN", base_url="http://127.0.0.1:1")
    assert built.token.reveal() == EM_TOKEN and EM_TOKEN not in repr(built)
    with pytest.raises(ValueError):
        build("nonesuch")


def test_all_subjects_cover_the_registry() -> None:
    # file: below; wattprint (the cluster's own service, no third party): tests/test_intensity_service.py
    assert {name.split("-")[0] for name in SUBJECTS} | {"file", "wattprint"} == set(PROVIDERS)


def fragments(secret_value: str, n: int = 8) -> set[str]:
    return {secret_value[i:i + n] for i in range(len(secret_value) - n + 1)}


@pytest.mark.parametrize("echo", [
    lambda t: "x" * 140 + f" bad token {t}",           # old: cut to 160 *before* scrubbing: 30 chars leaked
    lambda t: "x" * 150 + t,
    lambda t: f"token {t[:30]}… is not valid",          # the server echoes part of it
    lambda t: f"…{t[-12:]} expired",
    lambda t: f"bad: {t[5:20]}",
    lambda t: json.dumps({"token": t}),
    lambda t: t.upper(),                               # not the token: nothing to hide, nothing hidden
])
@async_test
async def test_no_fragment_of_a_credential_survives_an_error_body(tmp_path: Path, echo, caplog) -> None:
    """Issue 14 #7: every 8-character piece of every secret is searched for in every output."""
    import logging

    async with fake_apis() as apis:
        apis.em.echo = echo
        apis.em.mode = "unauthorized"
        em = ElectricityMaps(zone="DE", token=secret(tmp_path, "em", EM_TOKEN), base_url=apis.em.url)
        with caplog.at_level(logging.DEBUG):
            err = await fetch_error(em)
    seen = "\n".join([str(err), repr(err), caplog.text, repr(em)])
    assert err.kind == "auth"
    assert not {f for f in fragments(EM_TOKEN) if f in seen}, seen
    assert len(str(err)) <= len("auth: HTTP 401: ") + 160  # still cut, after scrubbing


def test_scrub_redacts_runs_and_keeps_the_rest() -> None:
    from exporter.carbon.providers.base import scrub

    token = "tok_0123456789abcdefghij"
    assert scrub(f"a {token} b", [token]) == "a <redacted> b"
    assert scrub(f"a {token[:9]} b {token[-8:]}", [token]) == "a <redacted> b <redacted>"
    assert scrub("a tok_012 b", [token]) == "a tok_012 b"  # 7 characters: not a fragment
    assert scrub("pw=hunter b", ["hunter"]) == "pw=<redacted> b"  # a short secret, whole
    assert scrub("nothing here", []) == "nothing here"
