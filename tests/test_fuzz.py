"""Hostile input, fuzzed with hypothesis: every parser that reads something Wattprint does not
control answers with its own error type (or a sane result), never another exception.

- the configuration (``exporter.config.load``): arbitrary YAML-able files, flag and environment
  strings → a Config or ``ConfigError``;
- the web configuration (``exporter.webconfig.load``): arbitrary YAML → ``WebConfigError`` (a
  ``ConfigError``);
- the engine exposition readers (``READERS[*].parse``) → a sane Reading or ``EngineParseError``;
- the identity parsers (``identity.cgroup.parse_cgroup``, ``identity.cmdline.detect``/``resolve``)
  and the procfs/RAPL readers → a result, never an exception;
- the grid-intensity providers' response handling, driven through ``Provider.fetch`` with a fake
  HTTP session that answers arbitrary status, headers and JSON → Readings or ``ProviderError``.

Each fuzz test is bounded (~200 examples, no deadline) to stay within a few seconds. Crashes that
the fuzzing found are pinned as deterministic tests below each section (all fixed since; see
docs/reliability.md, "Bugs found and fixed"); where a strategy still steps around such an input,
it names the test that covers it.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import string
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter import config, webconfig
from exporter.carbon.intensity import IntensityService
from exporter.carbon.providers import (ERROR_KINDS, MAX_PLAUSIBLE_G_PER_KWH, SIGNALS, ElectricityMaps,
                                       FileProvider, ProviderError, Reading, Secret, UKCarbonIntensity,
                                       WattTime)
from exporter.config import ConfigError
from exporter.engines import READERS, EngineParseError
from exporter.identity import cgroup, cmdline
from exporter.sensors import procfs, rapl
from exporter.sensors.procfs import ProcessTable
from exporter.webconfig import WebConfigError

# WATTPRINT_FUZZ_EXAMPLES=5000 for a longer hunt than the suite's default
FUZZ = settings(max_examples=int(os.environ.get("WATTPRINT_FUZZ_EXAMPLES", "200")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# --- shared strategies ------------------------------------------------------------------------------

SCALARS = (st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=40))
YAMLABLE = st.recursive(SCALARS, lambda kids: st.lists(kids, max_size=4)
                        | st.dictionaries(st.text(max_size=12), kids, max_size=4), max_leaves=20)


def _tmpfile(data: bytes) -> str:
    fd, path = tempfile.mkstemp(prefix="wattprint-fuzz-", suffix=".yaml")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


def _known(draw_from: dict[str, list[str]], extra: st.SearchStrategy) -> st.SearchStrategy:
    """Dicts keyed mostly by real names (so validation gets deep), sometimes by junk."""
    return st.dictionaries(st.sampled_from(sorted(draw_from)) | st.text(max_size=10), extra, max_size=6)


# --- the configuration -------------------------------------------------------------------------------

SECTIONS = {section: sorted(f.default_factory.model_fields)  # type: ignore[union-attr]
            for section, f in config.Config.model_fields.items()}
PROVIDER_OPTIONS = ["type", "name", "zone", "token_env", "token_file", "token", "region", "username",
                    "password_env", "password_file", "region_id", "base_url", "path", "timeout_s",
                    "stale_after_s", "poll_interval_s", "emission_factor_type", "disable_estimations"]
# inline "token"/"clock" are left out: test_provider_options_that_are_not_configuration_are_refused
FINITE = (st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.text(max_size=20)
          | st.floats(allow_nan=True, allow_infinity=False))  # inf region_id: test_ukgrid_infinite_region_id…
PROVIDER = st.fixed_dictionaries(
    {"type": st.sampled_from(["electricitymaps", "watttime", "ukgrid", "file", "nope"])},
    optional={k: FINITE for k in PROVIDER_OPTIONS if k not in ("type", "token")})
RULE_REGEX = st.text(alphabet="ab.*+?()[]{}|^$\\0123456789", max_size=20).filter(
    lambda s: not re.search(r"\{\d{9,}", s))  # huge repeat: test_rule_regex_overflow_is_a_config_error


def _section_value(section: str) -> st.SearchStrategy:
    keys = SECTIONS[section]
    special = {"providers": st.lists(PROVIDER, max_size=3),
               "rules": st.lists(st.fixed_dictionaries({}, optional={"name": SCALARS, "cmdline": RULE_REGEX,
                                                                     "model": SCALARS}), max_size=3),
               "budgets": st.lists(st.dictionaries(st.sampled_from(["endpoint", "model", "namespace",
                                                                     "grams_per_request", "x"]), FINITE,
                                                   max_size=4), max_size=3),
               "targets": st.lists(st.dictionaries(st.sampled_from(["endpoint", "engine", "url", "model", "x"]),
                                                   st.sampled_from(["vllm", "http://x/metrics", "e"]) | FINITE,
                                                   max_size=4), max_size=3),
               "interval": st.sampled_from(["5s", "500ms", "0", "1h", "9" * 400, "5 s", "-1s"]) | FINITE,
               "region": st.sampled_from(["DE", "aws:us-east-1", "westeurope", "", "xx"]) | FINITE}
    value = st.one_of(*[special.get(k, FINITE) for k in keys])
    return st.dictionaries(st.sampled_from(keys) | st.text(max_size=8), value, max_size=4) | FINITE


CONFIG_DOC = st.dictionaries(st.sampled_from(sorted(SECTIONS)) | st.text(max_size=8),
                             st.deferred(lambda: st.one_of(*[_section_value(s) for s in SECTIONS])), max_size=5)


def _load_or_config_error(path: str | None, flags=None, environ=None) -> None:
    try:
        cfg = config.load(path, flags or {}, environ if environ is not None else {})
    except ConfigError as e:
        assert str(e)
        return
    assert isinstance(cfg, config.Config)


@FUZZ
@given(doc=CONFIG_DOC)
def test_fuzz_config_file_from_yamlable_dicts(doc: dict) -> None:
    path = _tmpfile(yaml.safe_dump(doc, allow_unicode=True).encode())
    try:
        _load_or_config_error(path)
    finally:
        os.unlink(path)


@FUZZ
@given(text=st.text(max_size=300))  # nesting beyond ~500 levels: test_deeply_nested_config_file…
def test_fuzz_config_file_from_arbitrary_text(text: str) -> None:
    path = _tmpfile(text.encode("utf-8"))  # not UTF-8: test_config_file_not_utf8_is_a_config_error
    try:
        _load_or_config_error(path)
    finally:
        os.unlink(path)


SCALAR_KEYS = [(s, k) for s, k, _ in config.scalar_keys()]


@FUZZ
@given(values=st.dictionaries(st.sampled_from(SCALAR_KEYS), st.text(max_size=30), max_size=8),
       via=st.sampled_from(["flags", "environment"]))
def test_fuzz_config_flag_and_environment_strings(values: dict, via: str) -> None:
    if via == "flags":
        _load_or_config_error(None, flags=values)
    else:
        environ = {config.env_name(s, k): v.replace("\0", "") for (s, k), v in values.items()}
        environ.pop("WATTPRINT_CONFIG_FILE", None)
        _load_or_config_error(None, environ=environ)


def _config_text(text: str | bytes) -> None:
    path = _tmpfile(text if isinstance(text, bytes) else text.encode())
    try:
        with pytest.raises(ConfigError):
            config.load(path, {}, {})
    finally:
        os.unlink(path)


@pytest.mark.parametrize("raw", [b"\xff\xfe\xfa", b"sample:\n  interval: \xe9\n"])
def test_config_file_not_utf8_is_a_config_error(raw: bytes) -> None:
    _config_text(raw)


def test_deeply_nested_config_file_is_a_config_error() -> None:
    _config_text("sample: " + "[" * 5000 + "]" * 5000 + "\n")


@pytest.mark.parametrize("regex", ["a{99999999999}", "(" * 2000 + ")" * 2000])
def test_rule_regex_overflow_is_a_config_error(regex: str) -> None:
    _config_text(yaml.safe_dump({"attribution": {"rules": [{"name": "x", "cmdline": regex}]}}))


def test_ukgrid_infinite_region_id_is_a_config_error() -> None:
    _config_text("carbon:\n  providers:\n    - {type: ukgrid, region_id: .inf}\n")


@pytest.mark.parametrize("provider", [
    {"type": "electricitymaps", "zone": "DE", "token": "inline-secret"},
    {"type": "watttime", "region": "CAISO_NORTH", "username": "u", "password": "inline-secret"},
    {"type": "file", "path": "/etc/wattprint/intensity.yaml", "clock": 1},
])
def test_provider_options_that_are_not_configuration_are_refused(provider: dict) -> None:
    _config_text(yaml.safe_dump({"carbon": {"providers": [provider]}}))


# --- the web configuration --------------------------------------------------------------------------

TLS_KEYS = ["cert", "cert_file", "cipher_suites", "client_allowed_sans", "client_auth_type", "client_ca",
            "client_ca_file", "curve_preferences", "key", "key_file", "max_version", "min_version",
            "prefer_server_cipher_suites"]
FILES = ["cert.pem", "key.pem", "ca.pem", "missing.pem", "subdir", "empty.pem"]  # relative to the file
WEB_VALUE = (st.sampled_from(FILES + ["TLS12", "TLS13", "TLS10", "RequireAndVerifyClientCert", "NoClientCert",
                                      "CurveP256", "X25519", "100ms", "1m30s", "0", "/healthz", "nosniff",
                                      "$2b$12$" + "a" * 53, "$2y$03$" + "b" * 53])
             | FINITE | st.lists(st.sampled_from(["TLS_AES_128_GCM_SHA256", "CurveP384", "/x", "y"]) | FINITE,
                                  max_size=3))
WEB_DOC = st.fixed_dictionaries({}, optional={
    "tls_server_config": st.dictionaries(st.sampled_from(TLS_KEYS) | st.text(max_size=6), WEB_VALUE, max_size=5)
    | WEB_VALUE,
    "http_server_config": st.dictionaries(st.sampled_from(["headers", "http2", "x"]),
                                          st.dictionaries(st.sampled_from(["X-Frame-Options", "Server",
                                                                           "Content-Security-Policy"]) | st.text(max_size=5),
                                                          WEB_VALUE, max_size=3) | WEB_VALUE, max_size=2),
    "basic_auth_users": st.dictionaries(st.text(max_size=8) | st.integers(), WEB_VALUE, max_size=3) | WEB_VALUE,
    "rate_limit": st.dictionaries(st.sampled_from(["interval", "burst", "x"]), WEB_VALUE, max_size=2) | WEB_VALUE,
    "auth_excluded_paths": WEB_VALUE,
    "junk": WEB_VALUE,
})


def _web_load(text: bytes, files: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory(prefix="wattprint-webfuzz-") as d:
        base = Path(d)
        for name, content in files.items():
            (base / name).write_bytes(content)
        (base / "subdir").mkdir()
        path = base / "web.yml"
        path.write_bytes(text)
        try:
            cfg = webconfig.load(path)
        except WebConfigError as e:
            assert isinstance(e, ConfigError) and str(e).startswith(f"--web.config.file {str(path)!r}")
            return
        assert isinstance(cfg, webconfig.WebConfig)


PEM_ISH = st.sampled_from([b"", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                           b"-----BEGIN PRIVATE KEY-----\nzz\n-----END PRIVATE KEY-----\n"]) | st.binary(max_size=200)


@FUZZ
@given(doc=WEB_DOC, files=st.fixed_dictionaries({"cert.pem": PEM_ISH, "key.pem": PEM_ISH, "ca.pem": PEM_ISH,
                                                 "empty.pem": st.just(b"")}))
def test_fuzz_web_config_from_yamlable_dicts(doc: dict, files: dict) -> None:
    _web_load(yaml.safe_dump(doc, allow_unicode=True).encode(), files)


@FUZZ
@given(raw=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_fuzz_web_config_from_arbitrary_bytes(raw: bytes) -> None:
    _web_load(raw, {})


def test_deeply_nested_web_config_is_a_web_config_error() -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "web.yml"
        path.write_text("rate_limit: " + "[" * 5000 + "]" * 5000 + "\n")
        with pytest.raises(WebConfigError):
            webconfig.load(path)


# --- the engine exposition readers -------------------------------------------------------------------

FAMILIES = sorted({f.sample for r in READERS.values() for f in getattr(r, "_wanted", ())}
                  | {f.name for r in READERS.values() for f in getattr(r, "_wanted", ())})
LABEL_VALUE = st.text(alphabet=string.printable + "é\u2028\\\"", max_size=12)
LABELS = st.dictionaries(st.sampled_from(["model_name", "model", "finished_reason", "engine", "le", "version",
                                          "a b", ""]), LABEL_VALUE, max_size=3)
NUMBER = (st.floats(allow_nan=True, allow_infinity=True).map(repr)
          | st.sampled_from(["NaN", "+Inf", "-Inf", "1e309", "0x10", "1_000", "", "-0", "3.0 1700000000000"]))


@st.composite
def exposition_line(draw) -> str:
    kind = draw(st.sampled_from(["sample", "sample", "type", "help", "junk", "blank"]))
    name = draw(st.sampled_from(FAMILIES) | st.text(alphabet=string.ascii_letters + ":_", min_size=1, max_size=10))
    if kind == "type":
        return f"# TYPE {name} {draw(st.sampled_from(['counter', 'gauge', 'histogram', 'summary', 'untyped', '', 'x']))}"
    if kind == "help":
        return f"# HELP {name} {draw(st.text(max_size=20))}"
    if kind == "junk":
        return draw(st.text(max_size=40))
    if kind == "blank":
        return ""
    labels = draw(LABELS)
    body = ",".join(f'{k}="{v}"' for k, v in labels.items())
    suffix = draw(st.sampled_from(["", "_sum", "_count", "_bucket", "_total", "_created"]))
    return f"{name}{suffix}{{{body}}} {draw(NUMBER)}" if labels or draw(st.booleans()) else f"{name}{suffix} {draw(NUMBER)}"


def _parse_or_refuse(engine: str, text: Any) -> None:
    try:
        reading = READERS[engine].parse(text)
    except EngineParseError as e:
        assert e.kind in ("format", "truncated", "missing", "malformed")
        return
    assert reading.engine == engine or (engine == "auto" and reading.engine in READERS)
    for model, counters in reading.models.items():
        assert isinstance(model, str) and counters.model == model
        assert all(math.isfinite(v) and v >= 0 for v in counters.counters().values())


@FUZZ
@given(engine=st.sampled_from(sorted(READERS)), lines=st.lists(exposition_line(), max_size=25),
       end=st.sampled_from(["\n", "", "\r\n", "\n\n"]))
def test_fuzz_engine_readers_exposition_grammar(engine: str, lines: list[str], end: str) -> None:
    _parse_or_refuse(engine, "\n".join(lines) + end)


@FUZZ
@given(engine=st.sampled_from(sorted(READERS)),
       raw=st.binary(max_size=400).map(lambda b: b.decode("utf-8", "replace"))
       | st.binary(max_size=50) | st.none() | st.integers() | st.just("{" * 3000) | st.just("[" * 3000 + "]" * 3000))
def test_fuzz_engine_readers_any_input(engine: str, raw: Any) -> None:
    _parse_or_refuse(engine, raw)


# --- identity: cgroup and command-line parsers; procfs and RAPL readers ------------------------------

HEX = "0123456789abcdef"
SEGMENT = st.one_of(
    st.sampled_from(["kubepods.slice", "kubepods", "burstable", "besteffort", "kubepods-burstable.slice",
                     "system.slice", "docker", "user.slice", "libpod_parent", "machine.slice", "init.scope", "..", ""]),
    st.text(alphabet=HEX, min_size=64, max_size=64).flatmap(
        lambda cid: st.sampled_from([cid, f"cri-containerd-{cid}.scope", f"crio-{cid}.scope", f"docker-{cid}.scope",
                                     f"libpod-{cid}.scope", f"crio-conmon-{cid}.scope", f"nerdctl-{cid}.scope",
                                     f"cri-containerd:{cid}", cid.upper()])),
    st.uuids().map(str).flatmap(lambda u: st.sampled_from([f"pod{u}", f"kubepods-burstable-pod{u.replace('-', '_')}.slice",
                                                           f"kubepods-pod{u.replace('-', '_')}.slice", f"pod{u[:-1]}"])),
    st.text(max_size=12))
CGROUP_LINE = st.builds(lambda n, ctl, segs: f"{n}:{ctl}:/" + "/".join(segs),
                        st.sampled_from(["0", "1", "12", "x"]), st.sampled_from(["", "cpu,cpuacct", "memory", "name=systemd"]),
                        st.lists(SEGMENT, max_size=7))


@FUZZ
@given(text=st.lists(CGROUP_LINE | st.text(max_size=40), max_size=5).map("\n".join) | st.text()
       | st.none() | st.binary(max_size=20))
def test_fuzz_parse_cgroup(text: Any) -> None:
    ref = cgroup.parse_cgroup(text)
    if ref is not None:
        assert ref.runtime in cgroup.RUNTIMES
        assert re.fullmatch("[0-9a-f]{64}", ref.container_id)
        assert ref.pod_uid is None or re.fullmatch(r"[0-9a-f-]{32,36}", ref.pod_uid)
        assert ref.qos in (None, *cgroup.QOS_CLASSES)


PROGRAMS = ["python", "python3", "/usr/bin/python3.11", "vllm", "text-generation-launcher", "text-generation-router",
            "text-generation-server", "tritonserver", "triton_python_backend_stub", "llama-server", "trtllm-serve",
            "ollama", "ollama_llama_server", "sglang", "-m", "vllm.entrypoints.openai.api_server", "sglang.launch_server",
            "serve", "runner"]
FLAGS = ["--model", "--port", "--served-model-name", "--model-path", "--model-id", "-p", "--prometheus-port",
         "--http-port", "--metrics-port", "-m", "-a", "--alias", "--tokenizer-name", "--host", "--", "-"]
ARG = st.sampled_from(PROGRAMS + FLAGS) | st.text(max_size=12) | st.integers(-5, 70000).map(str)
ENV = st.dictionaries(st.sampled_from(["MODEL_ID", "PORT", "OLLAMA_HOST", "LLAMA_ARG_PORT", "LLAMA_ARG_MODEL",
                                       "LLAMA_ARG_ALIAS", "X"]), st.text(max_size=12) | st.integers(0, 70000).map(str),
                      max_size=3) | st.none()


@FUZZ
@given(argv=st.lists(ARG, max_size=10), environ=ENV)
def test_fuzz_cmdline_detect(argv: list[str], environ: dict | None) -> None:
    ident = cmdline.detect(argv, environ)
    if ident is not None:
        assert ident.engine in cmdline.ENGINES and isinstance(ident.model, str)
        for port in (ident.port, ident.metrics_port):
            assert port is None or 0 < port < 65536
        assert ident.endpoint.startswith(ident.engine + "-")


class P:
    def __init__(self, pid: int, ppid: int, argv: tuple[str, ...]) -> None:
        self.pid, self.ppid, self.comm, self.cmdline = pid, ppid, argv[0] if argv else "", argv


@FUZZ
@given(tree=st.dictionaries(st.integers(1, 12), st.tuples(st.integers(0, 12), st.lists(ARG, max_size=6)), max_size=10),
       pid=st.integers(0, 13))
def test_fuzz_cmdline_resolve_any_process_tree(tree: dict, pid: int) -> None:
    """Cycles, missing parents, self-parents: resolve terminates and answers sanely."""
    procs = {p: P(p, ppid, tuple(argv)) for p, (ppid, argv) in tree.items()}
    found = cmdline.resolve(pid, procs)
    if found is not None:
        assert found[1] in procs and found[0].engine in cmdline.ENGINES


STAT_TEXT = st.one_of(
    st.text(max_size=80),
    st.builds(lambda pid, comm, rest: f"{pid} ({comm}) {rest}", st.integers(-1, 10**6), st.text(max_size=20),
              st.lists(st.integers(-10, 2**64).map(str) | st.text(max_size=3), max_size=30).map(" ".join)))


@FUZZ
@given(stats=st.dictionaries(st.integers(1, 400).map(str) | st.sampled_from(["self", "0", "-1", "007"]),
                             st.tuples(STAT_TEXT, st.binary(max_size=30)), max_size=6),
       node_stat=st.text(max_size=120) | st.just("cpu  1 2 3 4 5 6 7 8 9 10\n"))
def test_fuzz_procfs_tree(stats: dict, node_stat: str) -> None:
    """Any /proc content: scan() never raises (bad pids are skipped as races); /proc/stat is
    ValueError at worst (the sampler counts it as kind=stat_valueerror)."""
    with tempfile.TemporaryDirectory() as d:
        for name, (stat, argv) in stats.items():
            (Path(d) / name).mkdir()
            (Path(d) / name / "stat").write_text(stat)
            (Path(d) / name / "cmdline").write_bytes(argv)
        (Path(d) / "stat").write_text(node_stat)
        table = ProcessTable(d)
        for _ in range(2):
            deltas = table.scan()
            assert all(v >= 0 and math.isfinite(v) for v in deltas.values())
        try:
            busy, total = table.node_delta()
        except ValueError:
            return
        except IndexError:  # test_proc_stat_short_cpu_line_is_a_value_error
            assert _short_cpu_line(node_stat)
            return
        assert busy >= 0 and total >= 0


def _short_cpu_line(text: str) -> bool:
    return any(line.startswith("cpu ") and len(line.split()) < 5 for line in text.splitlines())


@pytest.mark.parametrize("text", ["cpu \n", "cpu  10 20 30\ncpu0 1 2 3 4\n"])
def test_proc_stat_short_cpu_line_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        procfs.parse_proc_stat(text)


ZONE_FILE = st.sampled_from(["0\n", "123456\n", "262143328850\n", "-5\n", "", "x", "1e5", " 42 ", "9" * 5000]) | st.text(max_size=12)


@FUZZ
@given(zones=st.dictionaries(st.sampled_from(["intel-rapl:0", "intel-rapl:0:0", "intel-rapl:1", "intel-rapl-mmio:0",
                                             "amd-rapl:0", "intel-rapl:x", "rapl"]),
                             st.tuples(st.sampled_from(["package-0", "dram", "core", "psys", "package-1", ""])
                                       | st.text(max_size=8), ZONE_FILE, ZONE_FILE), max_size=4),
       reads=st.lists(st.dictionaries(st.sampled_from(["intel-rapl:0", "intel-rapl:0:0", "intel-rapl:1", "amd-rapl:0"]),
                                      ZONE_FILE, max_size=3), max_size=3))
def test_fuzz_rapl_tree(zones: dict, reads: list) -> None:
    """Any powercap content: discovery and reads never raise; errors are kinds; deltas are joules
    ≥ 0 as long as the counters stay within their own max_energy_range_uj (the kernel's
    invariant; see test_rapl_counter_beyond_its_range_never_gives_a_negative_delta)."""
    with tempfile.TemporaryDirectory() as d:
        base = Path(d) / "class" / "powercap"
        for zone, (name, max_range, energy) in zones.items():
            (base / zone).mkdir(parents=True)
            (base / zone / "name").write_text(name)
            (base / zone / "max_energy_range_uj").write_text(max_range)
            (base / zone / "energy_uj").write_text(energy)
        meter = rapl.RaplMeter(d)
        assert isinstance(meter.problem, str)
        for step in [{}, *reads]:
            for zone, energy in step.items():
                if (base / zone).is_dir():
                    (base / zone / "energy_uj").write_text(energy)
            within = all(_int(z.path, "energy_uj") is None or z.max_range_uj <= 0
                         or 0 <= _int(z.path, "energy_uj") <= z.max_range_uj for z in meter.zones)
            deltas, errors = meter.read()
            assert set(errors.values()) <= {"permission", "read", "parse"}
            if within:
                assert all(math.isfinite(j) and j >= 0 for j in deltas.values()), deltas


def _int(path: str, name: str) -> int | None:
    try:
        return int(Path(path, name).read_bytes().strip())
    except (OSError, ValueError):
        return None


def test_rapl_counter_beyond_its_range_never_gives_a_negative_delta() -> None:
    assert rapl.wrap_delta(prev=100, cur=50, max_range=10) >= 0


# --- the grid-intensity providers' response handling --------------------------------------------------

class FakeResponse:
    def __init__(self, status: int, body: str | bytes, headers: dict[str, str]) -> None:
        self.status, self._body, self.headers = status, body, headers

    async def text(self) -> str:
        return self._body.decode("utf-8") if isinstance(self._body, bytes) else self._body

    async def __aenter__(self) -> "FakeResponse":
        return self

    async def __aexit__(self, *exc: object) -> bool:
        return False


class FakeSession:
    """Stands in for aiohttp.ClientSession: ``answer(path)`` gives (status, body, headers)."""

    def __init__(self, answer) -> None:
        self.answer = answer

    def get(self, url: str, **kwargs: Any) -> FakeResponse:
        return FakeResponse(*self.answer(url.split("?", 1)[0].rsplit("/", 1)[-1]))


TOKEN = "fuzz-secret-7f3a9c"
os.environ["WATTPRINT_FUZZ_TOKEN"] = TOKEN


def _providers() -> dict[str, Any]:
    secret = Secret(env="WATTPRINT_FUZZ_TOKEN")
    now = lambda: 1_790_000_000.0  # noqa: E731
    return {"electricitymaps": ElectricityMaps(zone="DE", token=secret, clock=now),
            "watttime": WattTime(region="CAISO_NORTH", username="u", password=secret, clock=now),
            "ukgrid": UKCarbonIntensity(clock=now),
            "ukgrid-regional": UKCarbonIntensity(region_id=1, clock=now)}


JSON_LEAF = (st.none() | st.booleans() | st.integers(-2**63, 2**63)  # > 1e308: test_provider_huge_integer…
             | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=16)
             | st.datetimes().map(lambda d: d.isoformat() + "Z") | st.sampled_from(["2025-06-01T12:00Z", "DE", "GB"]))
JSON = st.recursive(JSON_LEAF, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids,
                                                                                        max_size=3), max_leaves=12)


def _maybe(value: Any) -> st.SearchStrategy:
    return st.just(value) | JSON


SHAPED = {
    "electricitymaps": st.fixed_dictionaries({}, optional={"zone": _maybe("DE"), "carbonIntensity": _maybe(300),
                                                           "datetime": _maybe("2026-09-21T12:00:00Z")}),
    "watttime": st.fixed_dictionaries({}, optional={
        "meta": st.fixed_dictionaries({}, optional={"units": _maybe("lbs_co2_per_mwh"), "region": _maybe("CAISO_NORTH")})
        | JSON,
        "data": st.lists(st.fixed_dictionaries({}, optional={"value": _maybe(1000.0),
                                                              "point_time": _maybe("2026-09-21T12:00:00+00:00")}) | JSON,
                         max_size=2) | JSON}),
    "ukgrid": st.fixed_dictionaries({}, optional={"data": st.lists(st.fixed_dictionaries({}, optional={
        "from": _maybe("2026-09-21T11:30Z"), "intensity": st.fixed_dictionaries({}, optional={
            "actual": _maybe(None), "forecast": _maybe(180)}) | JSON}) | JSON, max_size=2) | JSON}),
}
SHAPED["ukgrid-regional"] = st.fixed_dictionaries({}, optional={"data": st.lists(st.fixed_dictionaries({}, optional={
    "regionid": _maybe(1), "data": st.lists(st.fixed_dictionaries({}, optional={
        "from": _maybe("2026-09-21T11:30Z"), "intensity": st.fixed_dictionaries({}, optional={"forecast": _maybe(180)})
        | JSON}), max_size=2) | JSON}) | JSON, max_size=2) | JSON})
STATUS = st.sampled_from([200, 200, 200, 400, 401, 403, 404, 429, 500, 503, 302, 204]) | st.integers(100, 599)
RETRY_AFTER = st.none() | st.sampled_from(["7", "-3", "1e9", "Wed, 21 Oct 2015 07:28:00 GMT", "nan", "inf"]) | st.text(max_size=20)


@st.composite
def answer(draw, name: str):
    """(status, body, headers): a shaped or arbitrary JSON body, or not JSON at all. Error bodies may
    quote the credential (APIs echo what they were sent); it must never reach the error text."""
    status = draw(STATUS)
    kind = draw(st.sampled_from(["shaped", "shaped", "json", "text", "bytes"]))
    if kind == "shaped":
        body: str | bytes = json.dumps(draw(SHAPED[name]))
    elif kind == "json":
        body = json.dumps(draw(JSON))
    elif kind == "text":
        body = draw(st.text(max_size=60))
    else:
        body = draw(st.binary(max_size=60))
    if status != 200 and draw(st.booleans()):
        body = json.dumps({draw(st.sampled_from(["error", "message"])): f"bad credential {TOKEN}"})
    headers = {} if (ra := draw(RETRY_AFTER)) is None else {"Retry-After": ra}
    return status, body, headers


def _check_provider(provider: Any, answers: dict[str, tuple]) -> None:
    session = FakeSession(lambda path: answers.get(path, answers["*"]))
    try:
        got = asyncio.run(provider.fetch(session))
    except ProviderError as e:
        assert e.kind in ERROR_KINDS and e.kind != "internal"
        if TOKEN in provider.secrets():  # its own credential is scrubbed (others are just text)
            assert TOKEN not in str(e)
        assert e.retry_after_s is None or (e.retry_after_s >= 0 and not math.isnan(e.retry_after_s))
        return
    assert isinstance(got, list) and got
    for r in got:
        assert isinstance(r, Reading) and r.signal in SIGNALS
        assert math.isfinite(r.grams_per_kwh) and 0 <= r.grams_per_kwh <= MAX_PLAUSIBLE_G_PER_KWH


@FUZZ
@given(data=st.data(), name=st.sampled_from(["electricitymaps", "watttime", "ukgrid", "ukgrid-regional"]))
def test_fuzz_provider_responses(data: st.DataObject, name: str) -> None:
    answers = {"*": data.draw(answer(name), label="data answer")}
    if name == "watttime":
        login = data.draw(st.one_of(st.just((200, json.dumps({"token": "jwt-abc"}), {})), answer(name)),
                          label="login answer")
        answers["login"] = login
    _check_provider(_providers()[name], answers)


@FUZZ
@given(doc=st.text(max_size=200) | JSON.map(json.dumps)
       | st.fixed_dictionaries({}, optional={"grams_per_kwh": JSON_LEAF, "zone": JSON_LEAF, "signal": _maybe("marginal"),
                                             "observed_at": JSON_LEAF}).map(lambda d: yaml.safe_dump(d)))
def test_fuzz_file_provider(doc: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "intensity.yaml"
        path.write_text(doc)
        provider = FileProvider(path=str(path), clock=lambda: 1_790_000_000.0)
        try:
            got = asyncio.run(provider.fetch())
        except ProviderError as e:
            assert e.kind in ERROR_KINDS
            return
        assert math.isfinite(got[0].grams_per_kwh) and got[0].signal in SIGNALS


def _em_answer(body: str) -> dict[str, tuple]:
    return {"*": (200, body, {})}


@pytest.mark.parametrize("body", ['{"zone": "DE", "carbonIntensity": 1' + "0" * 400 + ', "datetime": 1}',
                                  '{"zone": "DE", "carbonIntensity": 1, "datetime": 1' + "0" * 400 + "}"])
def test_provider_huge_integer_is_malformed(body: str) -> None:
    with pytest.raises(ProviderError):
        asyncio.run(_providers()["electricitymaps"].fetch(FakeSession(lambda path: (200, body, {}))))


@pytest.mark.parametrize("when", ['"2999-01-01T00:00:00Z"', "Infinity", "NaN"])
def test_provider_data_point_from_the_future_is_refused(when: str) -> None:
    body = '{"zone": "DE", "carbonIntensity": 321, "datetime": %s}' % when
    em = _providers()["electricitymaps"]
    with pytest.raises(ProviderError):
        asyncio.run(em.fetch(FakeSession(lambda path: (200, body, {}))))


def test_future_data_point_cannot_pin_the_intensity() -> None:
    """End to end: a data point timed in the future is refused, so it cannot pin the intensity;
    a month later (the real reading stale too) the static value is in use."""
    clock = {"t": 1_790_000_000.0}
    em = ElectricityMaps(zone="DE", token=Secret(env="WATTPRINT_FUZZ_TOKEN"), clock=lambda: clock["t"])
    svc = IntensityService([em], 400.0, "static", max_age_s=7200, clock=lambda: clock["t"])
    bodies = iter(['{"zone": "DE", "carbonIntensity": 999, "datetime": "2999-01-01T00:00:00Z"}',
                   '{"zone": "DE", "carbonIntensity": 100, "datetime": "%s"}'])

    def answer_(path: str) -> tuple:
        body = next(bodies)
        return 200, (body % "2026-09-21T12:00:00Z" if "%s" in body else body), {}

    session = FakeSession(answer_)
    asyncio.run(svc.poll_once(session))  # type: ignore[arg-type]
    clock["t"] += 30 * 86400
    asyncio.run(svc.poll_once(session))  # type: ignore[arg-type]
    assert svc.current().grams_per_kwh == 400.0 and svc.current().provider == "static"
    assert svc.stats()["electricitymaps"]["errors"].get("implausible") == 1


def test_credential_echoed_in_a_200_answer_never_reaches_the_error_text() -> None:
    body = json.dumps({"zone": f"echo {TOKEN}", "carbonIntensity": 1, "datetime": "2026-09-21T12:00:00Z"})
    with pytest.raises(ProviderError) as err:
        asyncio.run(_providers()["electricitymaps"].fetch(FakeSession(lambda path: (200, body, {}))))
    assert TOKEN not in str(err.value)
