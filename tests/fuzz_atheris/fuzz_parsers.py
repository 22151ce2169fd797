#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris/libFuzzer) of the parsers of untrusted input. Not collected
by pytest (the name does not start with ``test_``); tests/test_fuzz.py is the suite's fuzzing.

The first input byte picks the target, the rest is its input:

    0 config file (exporter.config.load)       → Config or ConfigError
    1 web config file (exporter.webconfig.load) → WebConfig or WebConfigError
    2 engine exposition text (READERS[*].parse) → Reading or EngineParseError
    3 /proc/<pid>/cgroup (identity.cgroup)      → ContainerRef or None
    4 command line + env (identity.cmdline)     → EngineIdentity or None
    5 a provider's JSON answer (ElectricityMaps, WattTime, UK) → Readings or ProviderError

Run (atheris is not a project dependency; install it anywhere, e.g. a throw-away target dir):

    .venv/bin/pip install --target /tmp/atheris-site atheris
    PYTHONPATH=/tmp/atheris-site:. .venv/bin/python tests/fuzz_atheris/fuzz_parsers.py \\
        -max_total_time=60 -rss_limit_mb=4096

Set WATTPRINT_ATHERIS_IGNORE_KNOWN=1 to step over the crashes already pinned as xfail tests in
tests/test_fuzz.py (non-UTF-8 config, RecursionError on deep nesting, OverflowError on huge
numbers) and look for new ones.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    from exporter import config, webconfig
    from exporter.carbon.providers import ElectricityMaps, ProviderError, Secret, UKCarbonIntensity, WattTime
    from exporter.engines import READERS, EngineParseError
    from exporter.identity import cgroup, cmdline

IGNORE_KNOWN = os.environ.get("WATTPRINT_ATHERIS_IGNORE_KNOWN") == "1"
KNOWN = (UnicodeDecodeError, RecursionError, OverflowError)
ENGINES = sorted(READERS)
os.environ.setdefault("WATTPRINT_ATHERIS_TOKEN", "atheris-secret")
TMP = tempfile.mkdtemp(prefix="wattprint-atheris-")
PATH = os.path.join(TMP, "input.yaml")


class _Resp:
    def __init__(self, body: str) -> None:
        self.status, self.body, self.headers = 200, body, {}

    async def text(self) -> str:
        return self.body

    async def __aenter__(self) -> "_Resp":
        return self

    async def __aexit__(self, *exc: object) -> bool:
        return False


class _Session:
    def __init__(self, body: str) -> None:
        self.body = body

    def get(self, url: str, **kw: object) -> _Resp:
        return _Resp('{"token": "t"}' if url.endswith("/login") else self.body)


def _providers():
    secret = Secret(env="WATTPRINT_ATHERIS_TOKEN")
    now = lambda: 1_790_000_000.0  # noqa: E731
    return [ElectricityMaps(zone="DE", token=secret, clock=now), UKCarbonIntensity(clock=now),
            UKCarbonIntensity(region_id=1, clock=now),
            WattTime(region="CAISO_NORTH", username="u", password=secret, clock=now)]


def one(data: bytes) -> None:
    if not data:
        return
    target, body = data[0] % 6, data[1:]
    fdp = atheris.FuzzedDataProvider(body)
    if target in (0, 1):
        with open(PATH, "wb") as fh:
            fh.write(body)
        try:
            (config.load(PATH, {}, {}) if target == 0 else webconfig.load(PATH))
        except config.ConfigError:
            pass
    elif target == 2:
        engine = ENGINES[fdp.ConsumeIntInRange(0, len(ENGINES) - 1)]
        try:
            READERS[engine].parse(fdp.ConsumeUnicodeNoSurrogates(len(body)))
        except EngineParseError:
            pass
    elif target == 3:
        cgroup.parse_cgroup(fdp.ConsumeUnicodeNoSurrogates(len(body)))
    elif target == 4:
        argv = [fdp.ConsumeUnicodeNoSurrogates(16) for _ in range(fdp.ConsumeIntInRange(0, 8))]
        env = {k: fdp.ConsumeUnicodeNoSurrogates(8) for k in ("PORT", "MODEL_ID", "OLLAMA_HOST")
               if fdp.ConsumeBool()}
        cmdline.detect(argv, env)
    else:
        provider = _providers()[fdp.ConsumeIntInRange(0, 3)]
        try:
            asyncio.run(provider.fetch(_Session(fdp.ConsumeUnicodeNoSurrogates(len(body)))))
        except ProviderError:
            pass


def test_one_input(data: bytes) -> None:
    try:
        one(data)
    except KNOWN:
        if not IGNORE_KNOWN:
            raise


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
