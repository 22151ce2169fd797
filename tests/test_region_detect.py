"""Region detection: config, Kubernetes node labels, and AWS/GCP/Azure instance metadata
(fakes in fakes/imds.py, on 127.0.0.1; nothing here touches 169.254.169.254)."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import pytest
from fakes.carbon_apis import async_test
from fakes.imds import MODES, fake_imds, refused_url

from exporter.carbon import regions
from exporter.carbon.region import (
    RegionGuess,
    detect_cloud_region,
    region_from_config,
    region_from_node_labels,
    resolve_region,
)

LOGGER = "exporter.carbon.region"
TIMEOUT_S = 0.3
MARGIN_S = 0.5  # scheduling slack on a loaded CI runner
NONE_LINE = "no cloud instance metadata answered within {}s (AWS, GCP, Azure): set carbon.region"

AWS = RegionGuess("aws", "eu-west-1", "AWS IMDSv2 placement/region", "aws:eu-west-1")
GCP = RegionGuess("gcp", "europe-west4", "GCP metadata zone", "gcp:europe-west4")
AZURE = RegionGuess("azure", "westeurope", "Azure IMDS compute/location", "azure:westeurope")
EXPECTED = {"aws": AWS, "gcp": GCP, "azure": AZURE}


def info_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.INFO]


# --- the fakes enforce each API's headers --------------------------------------------------


@async_test
async def test_fakes_reject_requests_without_the_required_header() -> None:
    async with fake_imds() as imds, aiohttp.ClientSession() as s:
        aws, gcp, azure = imds.aws.url, imds.gcp.url, imds.azure.url
        region = f"{aws}/latest/meta-data/placement/region"
        async with s.get(region) as r:
            assert r.status == 401  # IMDSv1-style GET, no token
        async with s.put(f"{aws}/latest/api/token") as r:
            assert r.status == 400  # no TTL header
        async with s.put(f"{aws}/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}) as r:
            token = await r.text()
        async with s.get(region, headers={"X-aws-ec2-metadata-token": "forged"}) as r:
            assert r.status == 401
        async with s.get(region, headers={"X-aws-ec2-metadata-token": token}) as r:
            assert (r.status, await r.text()) == (200, "eu-west-1")

        zone = f"{gcp}/computeMetadata/v1/instance/zone"
        async with s.get(zone) as r:
            assert r.status == 403
        async with s.get(zone, headers={"Metadata-Flavor": "Google", "X-Forwarded-For": "10.0.0.1"}) as r:
            assert r.status == 403

        location = f"{azure}/metadata/instance/compute/location"
        async with s.get(location, params={"api-version": "2021-02-01", "format": "text"}) as r:
            assert r.status == 400
        async with s.get(location, headers={"Metadata": "true"}) as r:
            assert r.status == 400  # no api-version


# --- happy paths -----------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["aws", "gcp", "azure"])
@async_test
async def test_each_cloud_alone(provider: str) -> None:
    async with fake_imds() as imds:
        for fake in imds.all:
            if fake.name != provider:
                fake.mode = "not_found"  # as another cloud's metadata server answers
        guess = await detect_cloud_region(timeout_s=TIMEOUT_S, endpoints=imds.endpoints)
    assert guess == EXPECTED[provider]
    assert regions.lookup(guess.key).key == guess.key  # the key is one the dataset knows


@async_test
async def test_requests_carry_the_documented_headers_and_paths() -> None:
    async with fake_imds() as imds:
        imds.gcp.mode = imds.azure.mode = "hang"
        assert await detect_cloud_region(timeout_s=TIMEOUT_S, endpoints=imds.endpoints) == AWS
        imds.aws.mode, imds.gcp.mode = "hang", "ok"
        assert await detect_cloud_region(timeout_s=TIMEOUT_S, endpoints=imds.endpoints) == GCP
        imds.gcp.mode, imds.azure.mode = "hang", "ok"
        assert await detect_cloud_region(timeout_s=TIMEOUT_S, endpoints=imds.endpoints) == AZURE

        put, get = imds.aws.requests[:2]
        assert (put.method, put.path) == ("PUT", "/latest/api/token")
        assert put.headers["X-aws-ec2-metadata-token-ttl-seconds"] == "60"
        assert (get.method, get.path) == ("GET", "/latest/meta-data/placement/region")
        assert get.headers["X-aws-ec2-metadata-token"] in imds.aws.tokens
        zone = imds.gcp.requests[0]
        assert (zone.path, zone.headers["Metadata-Flavor"]) == ("/computeMetadata/v1/instance/zone", "Google")
        loc = imds.azure.requests[0]
        assert (loc.path, loc.headers["Metadata"]) == ("/metadata/instance/compute/location", "true")
        assert loc.query == {"api-version": "2021-02-01", "format": "text"}
        assert not any("X-Forwarded-For" in r.headers for r in imds.requests)


@pytest.mark.parametrize(
    ("zone", "region"),
    [
        ("projects/123456789012/zones/us-central1-f", "us-central1"),
        ("projects/42/zones/northamerica-northeast2-b\n", "northamerica-northeast2"),
        ("projects/7/zones/me-central2-c", "me-central2"),
    ],
)
@async_test
async def test_gcp_zone_to_region(zone: str, region: str) -> None:
    async with fake_imds(gcp=zone) as imds:
        imds.aws.mode = imds.azure.mode = "server_error"
        guess = await detect_cloud_region(timeout_s=TIMEOUT_S, endpoints=imds.endpoints)
    assert guess == RegionGuess("gcp", region, "GCP metadata zone", f"gcp:{region}")


@async_test
async def test_first_valid_answer_wins_without_waiting_for_the_slow_ones() -> None:
    async with fake_imds() as imds:
        imds.aws.mode = imds.gcp.mode = "hang"
        start = time.monotonic()
        guess = await detect_cloud_region(timeout_s=2.0, endpoints=imds.endpoints)
        elapsed = time.monotonic() - start
    assert guess == AZURE
    assert elapsed < 1.0


@async_test
async def test_a_session_passed_in_is_used_and_left_open() -> None:
    async with fake_imds() as imds, aiohttp.ClientSession() as session:
        imds.aws.mode = imds.azure.mode = "not_found"
        assert await detect_cloud_region(session, timeout_s=TIMEOUT_S, endpoints=imds.endpoints) == GCP
        assert not session.closed


@async_test
async def test_an_empty_endpoint_skips_that_cloud(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    async with fake_imds() as imds:
        endpoints = {"aws": "", "gcp": imds.gcp.url + "/", "azure": ""}
        imds.gcp.mode = "html"
        assert await detect_cloud_region(timeout_s=TIMEOUT_S, endpoints=endpoints) is None
        assert not imds.aws.requests and not imds.azure.requests
    assert info_lines(caplog) == ["no cloud instance metadata answered within 0.3s (GCP): set carbon.region"]


def test_an_unknown_endpoint_name_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="'GCP'"):
        asyncio.run(detect_cloud_region(endpoints={"GCP": "http://127.0.0.1:9"}))


# --- nothing usable --------------------------------------------------------------------------


@pytest.mark.parametrize("own_session", [True, False])
@async_test
async def test_hanging_servers_are_bounded_by_the_timeout(own_session: bool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    async with fake_imds() as imds, aiohttp.ClientSession() as session:  # aiohttp default: 5 min
        imds.set_mode("hang")
        imds.aws.token_mode = "hang"  # the PUT itself never answers (IMDS hop limit in a pod)
        start = time.monotonic()
        guess = await detect_cloud_region(None if own_session else session, timeout_s=TIMEOUT_S,
                                          endpoints=imds.endpoints)
        elapsed = time.monotonic() - start
    assert guess is None
    assert TIMEOUT_S * 0.9 <= elapsed < TIMEOUT_S + MARGIN_S
    assert info_lines(caplog) == [NONE_LINE.format(TIMEOUT_S)]


@async_test
async def test_aws_token_and_region_share_one_timeout() -> None:
    """A token that comes back, then a region that hangs: still bounded by timeout_s overall."""
    async with fake_imds() as imds, aiohttp.ClientSession() as session:
        imds.set_mode("hang")
        start = time.monotonic()
        assert await detect_cloud_region(session, timeout_s=TIMEOUT_S, endpoints=imds.endpoints) is None
        assert time.monotonic() - start < TIMEOUT_S + MARGIN_S
        assert [r.method for r in imds.aws.requests] == ["PUT", "GET"]


@pytest.mark.parametrize("mode", [m for m in MODES if m not in ("ok", "hang")])
@async_test
async def test_bad_answers_are_ignored(mode: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    async with fake_imds() as imds:
        imds.set_mode(mode)
        assert await detect_cloud_region(timeout_s=TIMEOUT_S, endpoints=imds.endpoints) is None
    assert info_lines(caplog) == [NONE_LINE.format(TIMEOUT_S)]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert {m.split(" ", 1)[0] for m in debug} >= {"AWS", "GCP", "Azure"}  # one reason each


@pytest.mark.parametrize(
    ("provider", "answer"),
    [
        ("aws", "US-EAST-1"),
        ("aws", "us_east_1"),
        ("aws", "us-east-1 " + "x" * 100),
        ("aws", "eu-west-1-"),
        ("aws", "{\"region\": \"eu-west-1\"}"),
        ("gcp", "europe-west4"),  # a region, not the zone path the API returns
        ("gcp", "projects/123/zones/europe-west4"),  # no zone letter
        ("gcp", "projects/123/zones/../../etc-a"),
        ("azure", "West Europe"),
        ("azure", "\"westeurope\""),
        ("azure", "westeurope\u00e9"),
    ],
)
@async_test
async def test_answers_that_are_no_region_name_are_ignored(provider: str, answer: str) -> None:
    async with fake_imds(**{provider: answer}) as imds:
        for fake in imds.all:
            fake.mode = "ok" if fake.name == provider else "not_found"
        assert await detect_cloud_region(timeout_s=TIMEOUT_S, endpoints=imds.endpoints) is None


@async_test
async def test_gcp_answer_without_the_flavor_header_is_not_gcp() -> None:
    async with fake_imds() as imds:
        imds.gcp.flavor_header = False
        imds.aws.mode = imds.azure.mode = "not_found"
        assert await detect_cloud_region(timeout_s=TIMEOUT_S, endpoints=imds.endpoints) is None


@async_test
async def test_garbage_from_one_does_not_hide_a_good_answer_from_another() -> None:
    async with fake_imds() as imds:
        imds.aws.mode, imds.gcp.mode = "html", "garbage"
        assert await detect_cloud_region(timeout_s=TIMEOUT_S, endpoints=imds.endpoints) == AZURE


@async_test
async def test_nothing_listening_returns_none_with_one_info_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    url = await refused_url()
    start = time.monotonic()
    guess = await detect_cloud_region(endpoints={"aws": url, "gcp": url, "azure": url})
    assert guess is None
    assert time.monotonic() - start < 1.0  # refused at once: no need to wait out the timeout
    assert info_lines(caplog) == [NONE_LINE.format("1.0")]
    assert "no cloud instance metadata answered within 1.0s (AWS, GCP, Azure): set carbon.region" in caplog.text


# --- node labels -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (
            {"topology.kubernetes.io/region": "us-east-1", "eks.amazonaws.com/nodegroup": "gpu"},
            RegionGuess("aws", "us-east-1", "node label topology.kubernetes.io/region", "aws:us-east-1"),
        ),
        (
            {"topology.kubernetes.io/region": "us-west-2", "karpenter.k8s.aws/instance-family": "p5"},
            RegionGuess("aws", "us-west-2", "node label topology.kubernetes.io/region", "aws:us-west-2"),
        ),
        (
            {"topology.kubernetes.io/region": "europe-west4", "cloud.google.com/gke-nodepool": "a100"},
            RegionGuess("gcp", "europe-west4", "node label topology.kubernetes.io/region", "gcp:europe-west4"),
        ),
        (
            {"topology.kubernetes.io/region": "westeurope", "kubernetes.azure.com/cluster": "mc_rg"},
            RegionGuess("azure", "westeurope", "node label topology.kubernetes.io/region", "azure:westeurope"),
        ),
        (  # legacy label only
            {"failure-domain.beta.kubernetes.io/region": "eastus", "kubernetes.azure.com/agentpool": "gpu"},
            RegionGuess("azure", "eastus", "node label failure-domain.beta.kubernetes.io/region", "azure:eastus"),
        ),
        (  # the current label wins over the legacy one
            {"topology.kubernetes.io/region": "europe-north1", "failure-domain.beta.kubernetes.io/region": "x-1"},
            RegionGuess("kubernetes", "europe-north1", "node label topology.kubernetes.io/region", "europe-north1"),
        ),
        (  # no cloud hint: bare key, left to regions.lookup
            {"topology.kubernetes.io/region": "FR", "kubernetes.io/hostname": "gpu-07"},
            RegionGuess("kubernetes", "fr", "node label topology.kubernetes.io/region", "fr"),
        ),
        (  # contradictory hints: do not guess
            {"topology.kubernetes.io/region": "us-east-1", "eks.amazonaws.com/nodegroup": "a",
             "cloud.google.com/gke-nodepool": "b"},
            RegionGuess("kubernetes", "us-east-1", "node label topology.kubernetes.io/region", "us-east-1"),
        ),
        (  # an invalid current label falls through to the legacy one
            {"topology.kubernetes.io/region": "rack 7", "failure-domain.beta.kubernetes.io/region": "eu-west-1"},
            RegionGuess("kubernetes", "eu-west-1", "node label failure-domain.beta.kubernetes.io/region",
                        "eu-west-1"),
        ),
        ({"topology.kubernetes.io/zone": "us-east-1a"}, None),
        ({"topology.kubernetes.io/region": "  "}, None),
        ({"topology.kubernetes.io/region": "<b>dc1</b>"}, None),
        ({}, None),
    ],
)
def test_region_from_node_labels(labels: dict[str, str], expected: RegionGuess | None) -> None:
    assert region_from_node_labels(labels) == expected


def test_label_keys_resolve_in_the_dataset() -> None:
    for labels in ({"topology.kubernetes.io/region": "europe-west4", "cloud.google.com/gke-nodepool": "p"},
                   {"topology.kubernetes.io/region": "westeurope"}):
        guess = region_from_node_labels(labels)
        assert guess is not None
        regions.lookup(guess.key)


# --- config and resolve order ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        ("aws:us-east-1", RegionGuess("config", "aws:us-east-1", "config carbon.region", "aws:us-east-1")),
        (" FR ", RegionGuess("config", "FR", "config carbon.region", "FR")),
        (None, None),
        ("", None),
        ("auto", None),
        ("AUTO", None),
    ],
)
def test_region_from_config(configured: str | None, expected: RegionGuess | None) -> None:
    assert region_from_config(configured) == expected


LABELS = {"topology.kubernetes.io/region": "europe-west1", "cloud.google.com/gke-nodepool": "gpu"}


@async_test
async def test_resolve_prefers_config_over_labels_and_metadata() -> None:
    async with fake_imds() as imds:
        guess = await resolve_region("gcp:europe-north1", LABELS, timeout_s=TIMEOUT_S, endpoints=imds.endpoints)
        assert guess is not None and (guess.provider, guess.key) == ("config", "gcp:europe-north1")
        assert imds.requests == []


@async_test
async def test_resolve_prefers_labels_over_metadata() -> None:
    async with fake_imds() as imds:
        guess = await resolve_region("auto", LABELS, timeout_s=TIMEOUT_S, endpoints=imds.endpoints)
        assert guess is not None and guess.key == "gcp:europe-west1"
        assert imds.requests == []


@async_test
async def test_resolve_falls_back_to_metadata() -> None:
    async with fake_imds() as imds:
        imds.aws.mode = imds.gcp.mode = "not_found"
        assert await resolve_region(None, {"kubernetes.io/hostname": "n1"}, timeout_s=TIMEOUT_S,
                                    endpoints=imds.endpoints) == AZURE
        imds.azure.mode = "not_found"
        async with aiohttp.ClientSession() as session:
            assert await resolve_region("", None, session, timeout_s=TIMEOUT_S, endpoints=imds.endpoints) is None
