"""Packaging: every source package ships, under the right import name, with the console script working."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import meshtrace

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"meshtrace": "meshtrace", "integrations": "meshtrace.integrations", "proxy": "meshtrace.proxy"}


def expected_packages() -> set[str]:
    found = set()
    for folder, name in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *relative)))
    return found


def test_every_package_folder_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    assert expected_packages() <= listed, f"missing from [tool.setuptools] packages: {expected_packages() - listed}"


def test_cli_version_and_help(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "meshtrace"
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert version.stdout.strip() == f"meshtrace {meshtrace.__version__}"
    helped = subprocess.run([str(exe), "--help"], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert "usage: meshtrace" in helped.stdout
    assert "commands" in helped.stdout


def test_cli_without_command_prints_help_and_fails(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "meshtrace"
    result = subprocess.run([str(exe)], check=False, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "usage: meshtrace" in result.stdout
