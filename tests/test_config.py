"""Configuration: precedence, validation errors that name key, value and what is allowed."""

import pytest

from exporter import cli, config
from exporter.config import ConfigError, load


def test_defaults():
    cfg = load(None, {}, {})
    assert cfg.web.listen_address == f":{config.DEFAULT_PORT}"
    assert cfg.sample.interval == 5.0 and cfg.log.format == "logfmt" and cfg.gpu.backend == "auto"


def test_precedence_file_env_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("sample:\n  interval: 10s\nlog:\n  level: debug\nweb:\n  listen_address: ':1'\n")
    env = {"WATTPRINT_SAMPLE_INTERVAL": "2s", "WATTPRINT_LOG_LEVEL": "warn"}
    cfg = load(str(f), {("sample", "interval"): "500ms"}, env)
    assert cfg.sample.interval == 0.5          # flag beats env beats file
    assert cfg.log.level == "warn"             # env beats file
    assert cfg.web.listen_address == ":1"      # file beats default


def test_config_file_from_env(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("cpu:\n  rapl: 'off'\n")
    assert load(None, {}, {"WATTPRINT_CONFIG_FILE": str(f)}).cpu.rapl == "off"


@pytest.mark.parametrize("flags,env,pattern", [
    ({("sample", "interval"): "fast"}, {}, r"sample\.interval='fast' \(from flag --sample\.interval\): not a duration"),
    ({("sample", "interval"): "10m"}, {}, r"sample\.interval.*between 100ms and 5m"),
    ({}, {"WATTPRINT_LOG_FORMAT": "xml"}, r"log\.format='xml' \(from environment WATTPRINT_LOG_FORMAT\).*allowed: 'logfmt' or 'json'"),
    ({("web", "listen_address"): "nowhere"}, {}, r"web\.listen_address='nowhere'.*host:port"),
    ({("gpu", "backend"): "cuda"}, {}, r"gpu\.backend='cuda'.*'auto', 'nvml', 'amdsmi', 'simulated', 'simulated-amd' or 'none'"),
    ({("cpu", "estimate_max_watts_per_vcpu"): "-1"}, {}, r"cpu\.estimate_max_watts_per_vcpu='-1'.*greater than or equal to 0"),
])
def test_errors_name_key_value_and_allowed(flags, env, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load(None, flags, env)


def test_unknown_key_in_file_lists_allowed(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("sample:\n  intervall: 5s\n")
    with pytest.raises(ConfigError, match=r"sample\.intervall: unknown key .*allowed here: interval"):
        load(str(f), {}, {})


@pytest.mark.parametrize("text,pattern", [("a: [", "not valid YAML"), ("- 1\n- 2\n", "top level must be a mapping")])
def test_broken_file(tmp_path, text, pattern):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=pattern):
        load(str(f), {}, {})


def test_missing_file():
    with pytest.raises(ConfigError, match=r"cannot read"):
        load("/nonexistent/wattprint.yaml", {}, {})


def test_rules_validated(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("attribution:\n  rules:\n    - {name: x, cmdline: '('}\n")
    with pytest.raises(ConfigError, match=r"invalid regular expression"):
        load(str(f), {}, {})


def test_cli_exits_2_with_the_error(capsys):
    assert cli.main(["check", "--sample.interval=forever"]) == 2
    err = capsys.readouterr().err
    assert "sample.interval='forever'" in err and "flag --sample.interval" in err


def test_every_scalar_key_has_a_flag_with_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    out = capsys.readouterr().out
    for section, key, _ in config.scalar_keys():
        assert config.flag_name(section, key) in out
        assert config.env_name(section, key) in out.replace("\n", "").replace(" ", "")
