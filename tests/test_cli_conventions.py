"""CLI conventions of Prometheus tools (issue 15): ``--version`` with branch, revision and build
date (and the same in ``wattprint_build_info``), help that lists the allowed values and shows
defaults as written (``2h``, not ``7200.0``), ``check`` exiting 1 when a meter asked for by name
is unusable (to gate an init container), and a bind failure logged as an error naming the address.

``--version``'s shape is prometheus/common version/info.go's ``versionInfoTmpl``::

    {{.program}}, version {{.version}} (branch: {{.branch}}, revision: {{.revision}})
      build user:       {{.buildUser}}
      build date:       {{.buildDate}}
      go version:       {{.goVersion}}
      platform:         {{.platform}}
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest

from exporter import buildinfo, cli, config
from support import ROOT, make_procfs


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WATTPRINT_")}
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60, env={**clean, **(env or {})})


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()


# --- --version and build info -------------------------------------------------------------------

def test_version_prints_like_prometheus_tools_from_the_checkout():
    out = run("--version")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    head = rf"wattprint, version 0\.1\.0 \(branch: {re.escape(git('rev-parse', '--abbrev-ref', 'HEAD'))}, " \
           rf"revision: {git('rev-parse', 'HEAD')}\)"
    assert re.fullmatch(head, lines[0]), lines[0]
    assert [ln.split(":")[0] for ln in lines[1:]] == ["  build user", "  build date", "  python version",
                                                      "  platform"]
    assert lines[3] == f"  python version:   {sys.version.split()[0]}"


def test_version_takes_build_arguments_from_the_environment():
    env = {"WATTPRINT_REVISION": "0123abc", "WATTPRINT_BRANCH": "release-0.1",
           "WATTPRINT_BUILD_DATE": "20261201-12:00:00", "WATTPRINT_BUILD_USER": "ci@builder"}
    out = run("--version", env=env)
    assert out.stdout.splitlines()[:3] == ["wattprint, version 0.1.0 (branch: release-0.1, revision: 0123abc)",
                                           "  build user:       ci@builder",
                                           "  build date:       20261201-12:00:00"]


def test_generated_build_file_wins_and_unknown_is_the_last_resort(tmp_path, monkeypatch):
    gen = tmp_path / "_build.py"
    values = buildinfo.write(gen, environ={"WATTPRINT_REVISION": "feedbeef", "WATTPRINT_BRANCH": "main"})
    assert values["revision"] == "feedbeef" and re.fullmatch(r"\d{8}-\d\d:\d\d:\d\d", values["build_date"])
    monkeypatch.setattr(buildinfo, "GENERATED", gen)
    got = buildinfo.info(environ={"WATTPRINT_REVISION": "from-env"})
    assert (got["revision"], got["branch"], got["build_date"]) == ("feedbeef", "main", values["build_date"])
    gen.write_text("import os\nREVISION = os.getcwd()\n")   # read as data, never run
    monkeypatch.setattr(buildinfo, "_git", lambda *a: "")
    got = buildinfo.info(environ={})
    assert got["revision"] == got["branch"] == got["build_date"] == buildinfo.UNKNOWN


def test_build_info_metric_carries_revision_and_branch(tmp_path):
    from exporter import daemon

    make_procfs(tmp_path / "proc", {}, 100, 100)
    c = config.load(None, {("path", "sysfs"): str(tmp_path), ("path", "procfs"): str(tmp_path / "proc"),
                           ("gpu", "backend"): "none", ("kubernetes", "enabled"): "off",
                           ("carbon", "region"): "FR", ("carbon", "detect_region"): "off"})
    sampler = daemon.build_sampler(c)
    sampler.sample()
    line = next(ln for ln in sampler.metrics_text().splitlines() if ln.startswith("wattprint_build_info{"))
    want = {"version": "0.1.0", "revision": git("rev-parse", "HEAD"), "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "python": sys.version.split()[0]}
    assert dict(re.findall(r'(\w+)="([^"]*)"', line)) == want and line.endswith(" 1.0")


# --- help: allowed values, defaults as written ---------------------------------------------------

def test_format_duration_writes_what_parse_duration_reads():
    assert [config.format_duration(s) for s in (7200, 5, 1, 0.5, 90, 0, 3600, 0.25, 1.5)] == \
        ["2h", "5s", "1s", "500ms", "90s", "0s", "1h", "250ms", "1500ms"]
    for _, _, f in config.scalar_keys():
        if config.is_duration(f):
            assert config.parse_duration(config.default_text(f)) == f.default


def _help(parser_args: list[str]) -> str:
    out = run(*parser_args, "--help")
    assert out.returncode == 0, out.stderr
    return re.sub(r"\s+", " ", out.stdout)


def test_help_lists_allowed_values_and_defaults_as_written():
    text = _help(["serve"])
    assert "--log.level LEVEL Log level. One of: debug, info, warn, error. Default: info." in text
    assert "--log.format FORMAT Log line format. One of: logfmt, json. Default: logfmt." in text
    assert "Default: 2h. Env: WATTPRINT_CARBON_MAX_AGE." in text
    assert "Default: 5s. Env: WATTPRINT_SAMPLE_INTERVAL." in text
    assert "7200.0" not in text and "Default: 1.0." not in text
    readme = (ROOT / "README.md").read_text()
    assert "| `--carbon.max-age` | `WATTPRINT_CARBON_MAX_AGE` | `2h` |" in readme


# --- check as an init-container gate -------------------------------------------------------------

def check_args(tmp_path, *extra: str) -> list[str]:
    make_procfs(tmp_path / "proc", {}, 100, 100)
    return ["check", f"--path.sysfs={tmp_path / 'sys'}", f"--path.procfs={tmp_path / 'proc'}",
            "--carbon.region=FR", "--carbon.detect-region=off", *extra]


def test_check_exits_1_when_an_asked_for_meter_is_unusable(tmp_path, capsys):
    assert cli.main(check_args(tmp_path, "--gpu.backend=none")) == 0          # auto CPU: the estimate
    capsys.readouterr()
    assert cli.main(check_args(tmp_path, "--gpu.backend=none", "--cpu.meter=rapl")) == 1
    out = capsys.readouterr().out
    assert "✘ asked for but not usable (exit status 1): --cpu.meter=rapl: RAPL: not usable — " in out
    assert cli.main(check_args(tmp_path, "--gpu.backend=none", "--cpu.meter=hwmon", "--output=json")) == 1
    rep = json.loads(capsys.readouterr().out)
    assert rep["unavailable_requested"] == [f"--cpu.meter=hwmon: hwmon: not usable — {tmp_path / 'sys'}/class/hwmon "
                                            "does not exist (no hwmon drivers loaded, or sysfs is not mounted there)"]
    assert cli.main(check_args(tmp_path, "--gpu.backend=none", "--cpu.meter=estimate")) == 0


def test_check_exits_1_for_an_asked_for_gpu_backend_without_its_library(tmp_path, capsys):
    cli.main(check_args(tmp_path, "--gpu.backend=none", "--output=json"))
    probe = run("check", "--output=json", f"--path.sysfs={tmp_path / 'sys'}", "--carbon.region=FR",
                "--carbon.detect-region=off")
    if json.loads(probe.stdout)["gpu"]["state"] == "ok":
        pytest.skip("this host has a working NVIDIA driver")
    capsys.readouterr()
    assert cli.main(check_args(tmp_path, "--gpu.backend=nvml")) == 1
    assert "--gpu.backend=nvml: GPU (nvml): " in capsys.readouterr().out
    sim = ROOT / "tests/fixtures/sim/two-endpoints.yaml"
    assert cli.main(check_args(tmp_path, "--gpu.backend=simulated", f"--gpu.simulation-file={sim}")) == 0


# --- bind failures ------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_serve_on_a_taken_port_logs_an_error_naming_the_address_and_exits_non_zero(tmp_path, fmt):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    address = f"127.0.0.1:{taken.getsockname()[1]}"
    try:
        out = run("serve", f"--web.listen-address={address}", "--gpu.backend=none", "--carbon.region=FR",
                  "--carbon.detect-region=off", f"--path.sysfs={tmp_path}", f"--log.format={fmt}")
    finally:
        taken.close()
    assert out.returncode == 1, out.stderr
    errors = [ln for ln in out.stderr.splitlines() if "error" in ln]
    assert len(errors) == 1, out.stderr
    if fmt == "json":
        rec = json.loads(errors[0])
        assert rec["level"] == "error" and rec["address"] == address and "address already in use" in rec["err"]
        assert rec["msg"].startswith(f"cannot listen on {address}: ")
    else:
        assert errors[0].split(" ")[1] == "level=error"
        assert f'msg="cannot listen on {address}: ' in errors[0] and f" address={address} " in errors[0]
    assert "Traceback" not in out.stderr


# --- command lines as people type them (tests/test_cli_conventions.py, adversarial review) -------

def test_serve_on_an_address_not_on_this_host_is_one_error_line_and_exit_1(tmp_path):
    """192.0.2.1 (TEST-NET-1, RFC 5737) is on no interface here: bind() fails with EADDRNOTAVAIL."""
    address = "192.0.2.1:10066"
    probe = socket.socket()
    try:
        probe.bind(("192.0.2.1", 0))
        pytest.skip("192.0.2.1 is configured on this host")
    except OSError:
        pass
    finally:
        probe.close()
    out = run("serve", f"--web.listen-address={address}", "--gpu.backend=none", "--carbon.region=FR",
              "--carbon.detect-region=off", f"--path.sysfs={tmp_path}", "--log.format=json")
    assert out.returncode == 1, out.stderr
    errors = [json.loads(ln) for ln in out.stderr.splitlines() if '"level": "error"' in ln or '"level":"error"' in ln]
    assert len(errors) == 1, out.stderr
    assert errors[0]["address"] == address and "cannot assign requested address" in errors[0]["err"]
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("flag, says", [
    ("--log.level=verbose", "invalid choice: 'verbose' (choose from 'debug', 'info', 'warn', 'error')"),
    ("--web.listen-address=:notaport", "web.listen_address=':notaport' (from flag --web.listen-address): "
                                       "not a listen address"),
    ("--web.listen-address=127.0.0.1:99999", "not a listen address: '127.0.0.1:99999'"),
])
def test_a_bad_flag_value_is_a_usage_error_naming_it(tmp_path, flag, says):
    out = run("serve", flag, "--gpu.backend=none", f"--path.sysfs={tmp_path}")
    assert out.returncode == 2 and says in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_check_json_with_an_unusable_explicit_backend_is_valid_json_and_exit_1(tmp_path):
    probe = run("check", "--output=json", f"--path.sysfs={tmp_path}", "--carbon.region=FR",
                "--carbon.detect-region=off")
    if json.loads(probe.stdout)["gpu"]["state"] == "ok":
        pytest.skip("this host has a working NVIDIA driver")
    out = run("check", "--gpu.backend=nvml", "--output=json", f"--path.sysfs={tmp_path}", "--carbon.region=FR",
              "--carbon.detect-region=off")
    assert out.returncode == 1, out.stderr
    rep = json.loads(out.stdout)                       # the whole of stdout: nothing else printed there
    assert any(r.startswith("--gpu.backend=nvml: GPU (nvml): ") for r in rep["unavailable_requested"])
