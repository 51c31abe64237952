"""The sidecar Dockerfile, checked without a container engine (there is none on these machines).

A small parser reads the instructions; the checks cover what the image promises (base, non-root user, the proxy
as entrypoint, a health check on /ready, ports), and the ENV defaults and the HEALTHCHECK command are exercised
for real against a `meshtrace proxy` process started from this checkout with those defaults.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshtrace.demo.processes import free_port
from meshtrace.proxy.config import load_config

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
MESHTRACE = Path(sys.executable).parent / "meshtrace"


@dataclass(frozen=True)
class Instruction:
    keyword: str        # upper case: FROM, RUN, ENV, ...
    args: str           # the rest, continuation lines joined
    line: int
    stage: int          # 0-based index of the FROM stage it belongs to


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with `\\` continuations joined and comment lines dropped (also inside continuations)."""
    out: list[Instruction] = []
    stage = -1
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue
        if not buffer:
            start = number
        continued = stripped.endswith("\\")
        buffer.append(stripped[:-1].strip() if continued else stripped)
        if continued:
            continue
        logical = " ".join(part for part in buffer if part)
        buffer = []
        keyword, _, args = logical.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(keyword, args.strip(), start, stage))
    assert not buffer, "the Dockerfile ends inside a continued line"
    return out


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), args
    assert all(isinstance(v, str) for v in value), args
    return value


def env_of(instructions: list[Instruction]) -> dict[str, str]:
    """The final stage's ENV as a dict (`KEY=value` pairs, shell-quoted values allowed)."""
    last = max(i.stage for i in instructions)
    env: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "ENV" and ins.stage == last:
            for pair in shlex.split(ins.args):
                key, sep, value = pair.partition("=")
                assert sep, f"line {ins.line}: ENV in the legacy `KEY value` form"
                env[key] = value
    return env


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def final(instructions: list[Instruction], keyword: str) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.keyword == keyword and i.stage == last]


def test_parser_joins_continuations_and_skips_comments() -> None:
    parsed = parse_dockerfile("# c\nFROM a AS b\nRUN x \\\n  # inner\n  && y\nfrom c\nENV A=1 \\\n    B='two words'\n")
    assert [(i.keyword, i.args, i.line, i.stage) for i in parsed] == [
        ("FROM", "a AS b", 2, 0), ("RUN", "x && y", 3, 0), ("FROM", "c", 6, 1), ("ENV", "A=1 B='two words'", 7, 1)]
    assert env_of(parsed) == {"A": "1", "B": "two words"}


def test_base_image_is_python_311_slim(instructions: list[Instruction]) -> None:
    froms = [i.args.split()[0] for i in instructions if i.keyword == "FROM"]
    assert froms
    assert all(image == "python:3.11-slim" for image in froms)


def test_runs_as_a_non_root_user_before_the_entrypoint(instructions: list[Instruction]) -> None:
    users = final(instructions, "USER")
    assert users, "no USER in the final stage: the image would run as root"
    user = users[-1].args.split(":")[0]
    assert user not in {"root", "0"}
    if user.isdigit():
        assert int(user) >= 1000
    entry = final(instructions, "ENTRYPOINT")[-1]
    assert users[-1].line < entry.line
    # Nothing after the USER switches back.
    assert all(i.keyword != "USER" for i in instructions if i.line > users[-1].line and i is not users[-1])


def test_entrypoint_is_the_proxy(instructions: list[Instruction]) -> None:
    entries = final(instructions, "ENTRYPOINT")
    assert len(entries) == 1
    assert exec_form(entries[0].args) == ["meshtrace", "proxy"]
    assert not final(instructions, "CMD"), "a CMD would become default proxy flags"


def healthcheck_command(instructions: list[Instruction]) -> list[str]:
    checks = final(instructions, "HEALTHCHECK")
    assert len(checks) == 1
    options, sep, command = checks[0].args.partition("CMD ")
    assert sep, "HEALTHCHECK without CMD"
    assert "--interval=" in options
    assert "--timeout=" in options
    return exec_form(command)


def test_healthcheck_uses_python_urllib_on_ready(instructions: list[Instruction]) -> None:
    argv = healthcheck_command(instructions)
    assert argv[:2] == ["python", "-c"]
    assert "urllib.request" in argv[2]
    assert "/ready" in argv[2]
    assert "curl" not in " ".join(argv)


def test_exposes_the_sidecar_ports(instructions: list[Instruction]) -> None:
    exposed = {int(p.split("/")[0]) for i in final(instructions, "EXPOSE") for p in i.args.split()}
    env = env_of(instructions)
    wanted = {int(env[f"MESHTRACE_PROXY_{name}"].rpartition(":")[2]) for name in ("LISTEN", "OUTBOUND", "ADMIN")}
    assert wanted <= exposed


def test_installs_meshtrace_proxy_from_the_source_tree(instructions: list[Instruction]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    folders = set(project["tool"]["setuptools"]["package-dir"].values())
    needed = folders | {"pyproject.toml", "setup.py", project["project"]["readme"]}
    copied = {word for i in instructions if i.keyword == "COPY" and i.stage == 0 for word in i.args.split()[:-1]}
    assert needed <= copied, f"not copied into the build stage: {needed - copied}"
    runs = " ".join(i.args for i in instructions if i.keyword == "RUN")
    assert "'.[proxy]'" in runs
    assert "'meshtrace[proxy]'" in runs
    # setup.py compiles with mypyc: the build stage needs a C compiler (python:3.11-slim has none).
    build_runs = " ".join(i.args for i in instructions if i.keyword == "RUN" and i.stage == 0)
    assert "gcc" in build_runs
    ignore_file = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    ignored = {line.strip() for line in ignore_file if line.strip() and not line.startswith("#")}
    assert not needed & ignored


def test_env_defaults_are_a_valid_sidecar_config(instructions: list[Instruction]) -> None:
    config = load_config({}, environ=env_of(instructions))
    assert config.listen is not None
    assert config.listen.port == 15006
    assert config.outbound is not None
    assert config.outbound.is_loopback
    assert config.admin is not None
    assert config.allow_public_bind


@pytest.fixture
def image_env(instructions: list[Instruction]) -> dict[str, str]:
    """The image's ENV with its ports moved to free ones (the host is shared), spans not exported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESHTRACE_", "OTEL_"))}
    image = env_of(instructions)
    for name in ("LISTEN", "OUTBOUND", "ADMIN"):
        host = image[f"MESHTRACE_PROXY_{name}"].rpartition(":")[0]
        image[f"MESHTRACE_PROXY_{name}"] = f"{host}:{free_port()}"
    image["MESHTRACE_EXPORTER"] = "none"
    image["MESHTRACE_PROXY_ACCESS_LOG"] = ""
    env.update(image)
    return env


def _healthcheck(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, text=True, timeout=10,
                          check=False)


def test_healthcheck_passes_against_a_sidecar_run_with_the_image_defaults(
        instructions: list[Instruction], image_env: dict[str, str]) -> None:
    argv = healthcheck_command(instructions)
    assert _healthcheck(argv, image_env).returncode != 0, "healthy with no sidecar running"
    proc = subprocess.Popen([str(MESHTRACE), "proxy"], env=image_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        result = _healthcheck(argv, image_env)
        while result.returncode != 0 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            result = _healthcheck(argv, image_env)
        assert proc.poll() is None, f"the sidecar exited: {proc.communicate()[1]}"
        assert result.returncode == 0, result.stderr
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0
