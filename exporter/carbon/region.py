"""Where is this node? The carbon region from config, Kubernetes node labels or cloud metadata.

``resolve_region`` tries, in order:

1. ``carbon.region`` from the config (anything ``regions.lookup`` accepts: ``aws:us-east-1``,
   ``westeurope``, ``FR``, …); empty or ``auto`` means "detect";
2. the node's ``topology.kubernetes.io/region`` label (or the legacy
   ``failure-domain.beta.kubernetes.io/region``), with the cloud guessed from other labels;
3. the instance metadata services of AWS (IMDSv2), GCP and Azure, queried concurrently, each
   bounded by ``timeout_s``; the first valid answer wins.

Nothing here raises on network trouble: a metadata service that is absent, slow, refuses us or
answers garbage is logged at debug level, and when none answers ``detect_cloud_region`` logs one
info line saying so and returns None.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

DEFAULT_ENDPOINTS: Mapping[str, str] = {
    "aws": "http://169.254.169.254",
    "gcp": "http://metadata.google.internal",
    "azure": "http://169.254.169.254",
}
PROVIDER_NAMES = {"aws": "AWS", "gcp": "GCP", "azure": "Azure"}

REGION_LABELS = ("topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/region")
# node-label key prefixes that only a given cloud's managed Kubernetes (or its autoscaler) sets
PROVIDER_LABEL_PREFIXES: Mapping[str, tuple[str, ...]] = {
    "aws": ("eks.amazonaws.com/", "karpenter.k8s.aws/", "alpha.eksctl.io/", "k8s.amazonaws.com/"),
    "gcp": ("cloud.google.com/",),
    "azure": ("kubernetes.azure.com/",),
}

_REGION_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_GCP_ZONE_RE = re.compile(r"projects/[0-9]+/zones/([a-z0-9]+(?:-[a-z0-9]+)*)-[a-z]")  # …/europe-west4-a
_MAX_BODY = 512  # bytes read from a metadata answer; a region name is far shorter

AWS_TOKEN_TTL_S = 60


@dataclass(frozen=True)
class RegionGuess:
    provider: str  # "aws" | "gcp" | "azure" | "config" | "kubernetes"
    region: str  # the provider's region name, e.g. "us-east-1", "europe-west4", "westeurope"
    source: str  # human-readable: "AWS IMDSv2 placement/region", "GCP metadata zone", …
    key: str  # dataset key for regions.lookup: f"{provider}:{region}" for clouds


class _NoAnswer(Exception):
    """A metadata probe got nothing usable; the message says why (debug log only)."""


def valid_region(text: str) -> bool:
    return len(text) <= 64 and _REGION_RE.fullmatch(text) is not None


def _cloud_guess(provider: str, region: str, source: str) -> RegionGuess:
    return RegionGuess(provider, region, source, f"{provider}:{region}")


# --- config and node labels -------------------------------------------------------------------


def region_from_config(configured: str | None) -> RegionGuess | None:
    """``carbon.region`` as given (key = the value, resolved later by ``regions.lookup``);
    None when unset, blank or ``auto``."""
    if configured is None:
        return None
    value = configured.strip()
    if not value or value.lower() == "auto":
        return None
    return RegionGuess("config", value, "config carbon.region", value)


def _provider_from_labels(labels: Mapping[str, str]) -> str | None:
    found = {
        provider
        for provider, prefixes in PROVIDER_LABEL_PREFIXES.items()
        if any(k.startswith(prefixes) for k in labels)
    }
    return found.pop() if len(found) == 1 else None  # none, or contradictory hints


def region_from_node_labels(labels: Mapping[str, str]) -> RegionGuess | None:
    """The node's region label. The cloud is guessed from labels only one cloud sets
    (``eks.amazonaws.com/*``, ``cloud.google.com/*``, ``kubernetes.azure.com/*``, …); without a
    (consistent) hint the provider is "kubernetes" and the key is the bare region name."""
    for label in REGION_LABELS:
        raw = labels.get(label)
        if raw is None or not raw.strip():
            continue
        region = raw.strip().lower()
        if not valid_region(region):
            log.debug("node label %s=%r is not a region name; ignored", label, raw[:80])
            continue
        provider = _provider_from_labels(labels)
        source = f"node label {label}"
        if provider is None:
            return RegionGuess("kubernetes", region, source, region)
        return _cloud_guess(provider, region, source)
    return None


# --- cloud instance metadata ------------------------------------------------------------------


async def _read(resp: aiohttp.ClientResponse, what: str) -> str:
    if resp.status != 200:
        raise _NoAnswer(f"{what}: HTTP {resp.status}")
    raw = await resp.content.read(_MAX_BODY)
    try:
        return raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise _NoAnswer(f"{what}: body is not ASCII") from None


def _region_or_raise(text: str, what: str) -> str:
    if not valid_region(text):
        raise _NoAnswer(f"{what}: not a region name: {text[:40]!r}")
    return text


async def _probe_aws(session: aiohttp.ClientSession, base: str) -> RegionGuess:
    async with session.put(
        f"{base}/latest/api/token",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": str(AWS_TOKEN_TTL_S)},
        allow_redirects=False,
    ) as resp:
        token = await _read(resp, "token")
    if not token or not token.isprintable() or len(token) >= _MAX_BODY:
        raise _NoAnswer("token: empty or unusable")
    async with session.get(
        f"{base}/latest/meta-data/placement/region",
        headers={"X-aws-ec2-metadata-token": token},
        allow_redirects=False,
    ) as resp:
        region = _region_or_raise(await _read(resp, "placement/region"), "placement/region")
    return _cloud_guess("aws", region, "AWS IMDSv2 placement/region")


async def _probe_gcp(session: aiohttp.ClientSession, base: str) -> RegionGuess:
    async with session.get(
        f"{base}/computeMetadata/v1/instance/zone",
        headers={"Metadata-Flavor": "Google"},
        allow_redirects=False,
    ) as resp:
        body = await _read(resp, "instance/zone")
        # the real server always sets it; anything else (a captive portal, a DNS catch-all) is not GCP
        if resp.headers.get("Metadata-Flavor") != "Google":
            raise _NoAnswer("instance/zone: answer lacks Metadata-Flavor: Google")
    m = _GCP_ZONE_RE.fullmatch(body)
    if m is None:
        raise _NoAnswer(f"instance/zone: not a zone: {body[:40]!r}")
    return _cloud_guess("gcp", _region_or_raise(m.group(1), "instance/zone"), "GCP metadata zone")


async def _probe_azure(session: aiohttp.ClientSession, base: str) -> RegionGuess:
    async with session.get(
        f"{base}/metadata/instance/compute/location",
        params={"api-version": "2021-02-01", "format": "text"},
        headers={"Metadata": "true"},
        allow_redirects=False,
    ) as resp:
        region = _region_or_raise(await _read(resp, "compute/location"), "compute/location")
    return _cloud_guess("azure", region, "Azure IMDS compute/location")


_PROBES = {"aws": _probe_aws, "gcp": _probe_gcp, "azure": _probe_azure}


async def _bounded(provider: str, session: aiohttp.ClientSession, base: str, timeout_s: float) -> RegionGuess | None:
    """One probe, its whole exchange (AWS: token and region) within timeout_s; None on failure."""
    try:
        async with asyncio.timeout(timeout_s):
            return await _PROBES[provider](session, base)
    except _NoAnswer as exc:
        log.debug("%s instance metadata at %s: %s", PROVIDER_NAMES[provider], base, exc)
    except TimeoutError:
        log.debug("%s instance metadata at %s: no answer within %ss", PROVIDER_NAMES[provider], base, timeout_s)
    except (aiohttp.ClientError, OSError, ValueError) as exc:  # refused, DNS, reset, bad URL
        log.debug("%s instance metadata at %s: %s", PROVIDER_NAMES[provider], base, type(exc).__name__)
    except Exception:  # a bug here must not stop the exporter from starting
        log.debug("%s instance metadata probe failed", PROVIDER_NAMES[provider], exc_info=True)
    return None


def _endpoints(endpoints: Mapping[str, str] | None) -> dict[str, str]:
    """Defaults overridden by ``endpoints``; an empty value skips that provider."""
    out = dict(DEFAULT_ENDPOINTS)
    for provider, base in (endpoints or {}).items():
        if provider not in out:
            raise ValueError(f"unknown metadata endpoint {provider!r}; expected one of {sorted(out)}")
        out[provider] = base
    return {p: b.rstrip("/") for p, b in out.items() if b}


async def detect_cloud_region(
    session: aiohttp.ClientSession | None = None,
    *,
    timeout_s: float = 1.0,
    endpoints: Mapping[str, str] | None = None,
) -> RegionGuess | None:
    """Ask AWS IMDSv2, GCP and Azure metadata concurrently; the first valid region wins.

    Each probe is bounded by timeout_s, so this returns within about timeout_s. ``endpoints``
    overrides base URLs by provider ("aws", "gcp", "azure"; "" skips one). None, and one info
    log line, when nothing answered. Raises only ValueError for an unknown ``endpoints`` key.
    """
    bases = _endpoints(endpoints)
    own = session is None
    if own:
        # trust_env stays False: metadata must never go through an HTTP(S)_PROXY
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))
    assert session is not None
    tasks = {asyncio.ensure_future(_bounded(p, session, b, timeout_s)): p for p, b in bases.items()}
    found: RegionGuess | None = None
    try:
        pending = set(tasks)
        while pending and found is None:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                guess = task.result() if not task.cancelled() else None
                if guess is not None and found is None:
                    found = guess
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if own:
            await _close(session)
    if found is None:
        names = ", ".join(PROVIDER_NAMES[p] for p in bases)
        log.info("no cloud instance metadata answered within %ss (%s): set carbon.region", float(timeout_s), names)
    else:
        log.debug("cloud region %s from %s", found.key, found.source)
    return found


async def _close(session: aiohttp.ClientSession) -> None:
    try:
        await session.close()
    except Exception:  # closing must not turn a result into an error
        log.debug("closing the metadata HTTP session failed", exc_info=True)


# --- all together -----------------------------------------------------------------------------


async def resolve_region(
    configured: str | None,
    node_labels: Mapping[str, str] | None,
    session: aiohttp.ClientSession | None = None,
    **kw: Any,
) -> RegionGuess | None:
    """config > node labels > cloud metadata (``kw`` goes to ``detect_cloud_region``)."""
    guess = region_from_config(configured)
    if guess is None and node_labels:
        guess = region_from_node_labels(node_labels)
    if guess is None:
        guess = await detect_cloud_region(session, **kw)
    if guess is not None:
        log.info("carbon region %s (from %s)", guess.key, guess.source)
    return guess
