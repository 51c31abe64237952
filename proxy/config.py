"""Sidecar settings from command-line flags, MESHTRACE_PROXY_* variables and an optional YAML file.

Precedence, highest first: flags, environment, file, defaults. Every bad value raises ConfigError naming
where it came from: the file and line, the variable, or the flag, plus the field. Tracing itself (exporter,
endpoint, propagators) is configured by the same OTEL_*/MESHTRACE_* variables as the library.

File format (every key optional; unknown keys are errors, not silently ignored):

    service: reviews
    listen: 127.0.0.1:15006        # inbound listener, in front of the app at `upstream`
    upstream: 127.0.0.1:8080
    outbound: 127.0.0.1:15001      # outbound listener the app sends its calls through
    admin: 127.0.0.1:15000
    sampling: 100                  # percent of traces started here (incoming decisions always win)
    drain_timeout: 10s             # durations: seconds as a number, or "500ms", "10s", "2m"
    upstream_timeout: 15s          # time to the response head; 0 disables
    connect_timeout: 5s
    idle_timeout: 60s
    header_timeout: 10s
    stream_idle_timeout: 5m        # a request in flight with no byte moving either way; 0 disables
    namespace: default             # workload identity (else from MESHTRACE_*/POD_* variables)
    tcp:                           # plain TCP pass-through ports (istio_tcp_* metrics): listen=upstream
      - 127.0.0.1:15010=127.0.0.1:5432
    rules: /etc/meshtrace/rules    # Istio VirtualService/DestinationRule/ServiceEntry YAML: a file or a folder
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from meshtrace import ConfigError

__all__ = ["Address", "SidecarConfig", "load_config", "parse_address", "parse_duration"]

ENV_PREFIX = "MESHTRACE_PROXY_"


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True)
class SidecarConfig:
    service: str | None = None
    listen: Address | None = None
    upstream: Address | None = None
    outbound: Address | None = None
    admin: Address | None = None
    sampling: float = 100.0
    drain_timeout: float = 10.0
    upstream_timeout: float = 15.0
    connect_timeout: float = 5.0
    idle_timeout: float = 60.0
    header_timeout: float = 10.0
    stream_idle_timeout: float = 300.0
    max_header_bytes: int = 60 * 1024
    tracing: bool = True
    access_log: str = "-"               # "-" stdout, "" off, else a file path
    access_log_format: str = "envoy"    # "envoy" or "json"
    allow_public_bind: bool = False     # listeners bind loopback only unless this is set
    namespace: str | None = None
    app: str | None = None
    version: str | None = None
    workload: str | None = None
    node_id: str = ""
    zone: str = ""
    trace_service_name: str | None = None   # default: "<service>-sidecar"
    tcp: tuple[tuple[Address, Address], ...] = ()   # (listen, upstream) pairs passed through as plain TCP
    rules: str | None = None                # Istio traffic rules (file or folder), applied on the outbound side
    source: str = "defaults"                # where the last layer came from, for /config_dump


def parse_address(text: str) -> Address:
    """`host:port` (IPv6 as `[::1]:port`) -> Address; ValueError with the reason otherwise."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"{text!r} is not [host]:port")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"{text!r} is not host:port")
    if not host:
        raise ValueError(f"{text!r} has no host")
    if not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ValueError(f"{text!r} has no valid port")
    return Address(host, int(port_text))


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like "250ms", "10s", "2m"; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        for unit in ("ms", "s", "m", "h"):
            if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
                seconds = float(text[: -len(unit)]) * _UNITS[unit]
                break
        else:
            try:
                seconds = float(text)
            except ValueError:
                raise ValueError(f"{value!r} is not a duration (use e.g. 500ms, 10s, 2m)") from None
    else:
        raise ValueError(f"{value!r} is not a duration")
    if not seconds >= 0:     # also catches NaN
        raise ValueError(f"{value!r} must not be negative")
    return seconds


def _percent(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r} is not a percentage")
    number = float(value)
    if not 0.0 <= number <= 100.0:
        raise ValueError(f"{value!r} is not between 0 and 100")
    return number


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
        return value.strip().lower() in {"1", "true", "yes", "on"}
    raise ValueError(f"{value!r} is not a boolean")


def _text(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{value!r} is not text")
    return str(value)


def _address(value: object) -> Address:
    return parse_address(_text(value))


def _positive_int(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a positive integer")
    number = int(value) if isinstance(value, int | str) else -1
    if number <= 0:
        raise ValueError(f"{value!r} is not a positive integer")
    return number


def _tcp_pairs(value: object) -> tuple[tuple[Address, Address], ...]:
    """`listen=upstream` strings (a list, or comma-separated in one string), or {listen, upstream} mappings."""
    items: list[object]
    if isinstance(value, str):
        items = [part for part in value.split(",") if part.strip()]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError(f"{value!r} is not a list of listen=upstream pairs")
    pairs = []
    for item in items:
        if isinstance(item, dict):
            if set(item) != {"listen", "upstream"}:
                raise ValueError(f"{item!r} needs exactly the keys listen and upstream")
            listen, upstream = item["listen"], item["upstream"]
        else:
            listen, sep, upstream = _text(item).partition("=")
            if not sep:
                raise ValueError(f"{item!r} is not listen=upstream (e.g. 127.0.0.1:15010=127.0.0.1:5432)")
        pairs.append((_address(listen), _address(upstream)))
    return tuple(pairs)


def _log_format(value: object) -> str:
    text = _text(value)
    if text not in {"envoy", "json"}:
        raise ValueError(f"{value!r} is not one of envoy, json")
    return text


_PARSERS: dict[str, Callable[[object], Any]] = {
    "service": _text, "listen": _address, "upstream": _address, "outbound": _address, "admin": _address,
    "sampling": _percent, "drain_timeout": parse_duration, "upstream_timeout": parse_duration,
    "connect_timeout": parse_duration, "idle_timeout": parse_duration, "header_timeout": parse_duration,
    "stream_idle_timeout": parse_duration,
    "max_header_bytes": _positive_int, "tracing": _boolean, "access_log": _text,
    "access_log_format": _log_format, "allow_public_bind": _boolean, "namespace": _text, "app": _text,
    "version": _text, "workload": _text, "node_id": _text, "zone": _text, "trace_service_name": _text,
    "tcp": _tcp_pairs, "rules": _text,
}
assert set(_PARSERS) == {f.name for f in fields(SidecarConfig)} - {"source"}


def _from_file(path: Path) -> dict[str, Any]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the config file: {exc.strerror}", source=source) from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"not valid YAML: {problem}", source=source,
                          line=mark.line + 1 if mark is not None else None) from exc
    if root is None:
        return {}
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError("the file must be a mapping of settings", source=source, line=root.start_mark.line + 1)
    constructor = yaml.SafeLoader("")
    values: dict[str, Any] = {}
    for key_node, value_node in root.value:
        line = key_node.start_mark.line + 1
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if key not in _PARSERS:
            known = ", ".join(sorted(_PARSERS))
            raise ConfigError(f"unknown setting (known: {known})", source=source, line=line, field=str(key))
        if key in values:
            raise ConfigError("set twice", source=source, line=line, field=key)
        try:
            raw = constructor.construct_object(value_node, deep=True)
            values[key] = _PARSERS[key](raw)
        except (ValueError, TypeError, yaml.YAMLError) as exc:
            raise ConfigError(str(exc), source=source, line=value_node.start_mark.line + 1, field=key) from exc
    return values


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, parse in _PARSERS.items():
        name = ENV_PREFIX + key.upper()
        raw = environ.get(name)
        if raw is None or raw == "":
            continue
        try:
            values[key] = parse(raw)
        except ValueError as exc:
            raise ConfigError(str(exc), source=f"environment variable {name}", field=key) from exc
    return values


def _from_flags(flags: Mapping[str, object]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, raw in flags.items():
        if raw is None:
            continue
        try:
            values[key] = _PARSERS[key](raw)
        except ValueError as exc:
            raise ConfigError(str(exc), source=f"--{key.replace('_', '-')}", field=key) from exc
    return values


def load_config(flags: Mapping[str, object] | None = None, *, path: str | os.PathLike[str] | None = None,
                environ: Mapping[str, str] | None = None) -> SidecarConfig:
    """Merge defaults <- file <- environment <- flags, then check the result as a whole."""
    env = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    sources = []
    if path is None and env.get(ENV_PREFIX + "CONFIG"):
        path = env[ENV_PREFIX + "CONFIG"]
    if path is not None:
        merged.update(_from_file(Path(path)))
        sources.append(str(path))
    from_env = _from_env(env)
    if from_env:
        merged.update(from_env)
        sources.append("environment")
    from_flags = _from_flags(flags or {})
    if from_flags:
        merged.update(from_flags)
        sources.append("flags")
    config = replace(SidecarConfig(), **merged, source=" < ".join(sources) or "defaults")
    _check(config, str(path) if path is not None else None)
    return config


def _check(config: SidecarConfig, source: str | None) -> None:
    if config.listen is None and config.outbound is None and not config.tcp:
        raise ConfigError("nothing to do: give --listen (inbound, with --upstream) and/or --outbound",
                          source=source, field="listen")
    if config.listen is not None and config.upstream is None:
        raise ConfigError("an inbound listener needs the local app's address", source=source, field="upstream")
    if not config.allow_public_bind:
        binds = [(name, getattr(config, name)) for name in ("listen", "outbound", "admin")]
        binds += [("tcp", listen) for listen, _ in config.tcp]
        for name, address in binds:
            if address is not None and not address.is_loopback:
                raise ConfigError(f"{address} is not a loopback address; set allow_public_bind to expose it",
                                  source=source, field=name)
