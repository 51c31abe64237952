"""Sidecar settings: precedence of flags, environment and file; errors that name file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshtrace import ConfigError
from meshtrace.proxy.config import Address, load_config, parse_address, parse_duration

BASE = {"listen": "127.0.0.1:15006", "upstream": "127.0.0.1:8080"}


def test_flags_only() -> None:
    config = load_config({**BASE, "service": "reviews"}, environ={})
    assert config.listen == Address("127.0.0.1", 15006)
    assert config.upstream == Address("127.0.0.1", 8080)
    assert (config.sampling, config.drain_timeout, config.upstream_timeout) == (100.0, 10.0, 15.0)


def test_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    path = tmp_path / "sidecar.yaml"
    path.write_text("service: from-file\nsampling: 10\ndrain_timeout: 2s\nlisten: 127.0.0.1:1\n"
                    "upstream: 127.0.0.1:2\n")
    config = load_config({"service": "from-flag"}, path=path, environ={"MESHTRACE_PROXY_SAMPLING": "20"})
    assert (config.service, config.sampling, config.drain_timeout) == ("from-flag", 20.0, 2.0)
    assert config.listen == Address("127.0.0.1", 1)


@pytest.mark.parametrize(("text", "line", "field", "words"), [
    ("service: a\nlisten: 127.0.0.1:x\n", 2, "listen", "port"),
    ("service: a\n\nsampling: 300\n", 3, "sampling", "between 0 and 100"),
    ("drain_timeout: soon\n", 1, "drain_timeout", "duration"),
    ("service: a\nbogus: 1\n", 2, "bogus", "unknown setting"),
    ("service: a\nservice: b\n", 2, "service", "set twice"),
    ("access_log_format: xml\n", 1, "access_log_format", "envoy, json"),
])
def test_bad_file_names_file_line_and_field(tmp_path: Path, text: str, line: int, field: str, words: str) -> None:
    path = tmp_path / "sidecar.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(BASE, path=path, environ={})
    error = info.value
    assert (error.source, error.line, error.field) == (str(path), line, field)
    assert words in str(error)
    assert f"line {line}" in str(error)


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("service: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(BASE, path=path, environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(BASE, path=tmp_path / "missing.yaml", environ={})


def test_bad_env_and_flag_name_their_source() -> None:
    with pytest.raises(ConfigError, match="MESHTRACE_PROXY_CONNECT_TIMEOUT"):
        load_config(BASE, environ={"MESHTRACE_PROXY_CONNECT_TIMEOUT": "-1"})
    with pytest.raises(ConfigError, match="--sampling"):
        load_config({**BASE, "sampling": "lots"}, environ={})


def test_whole_config_checks() -> None:
    with pytest.raises(ConfigError, match="nothing to do"):
        load_config({}, environ={})
    with pytest.raises(ConfigError, match="upstream"):
        load_config({"listen": "127.0.0.1:1"}, environ={})
    with pytest.raises(ConfigError, match="loopback"):
        load_config({**BASE, "listen": "0.0.0.0:15006"}, environ={})
    assert load_config({**BASE, "listen": "0.0.0.0:1", "allow_public_bind": True}, environ={}).listen


def test_parsers() -> None:
    assert parse_duration("250ms") == 0.25
    assert parse_duration("2m") == 120
    assert parse_duration(3) == 3.0
    assert parse_address("[::1]:80") == Address("::1", 80)
    with pytest.raises(ValueError, match="host:port"):
        parse_address("nohost")
