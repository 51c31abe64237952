"""The layering rules of ARCHITECTURE.md, checked on the source: they hold only while a test says so."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "meshtrace"
INTEGRATIONS = ROOT / "integrations"
PROXY = ROOT / "proxy"
FRAMEWORKS = {"flask", "django", "werkzeug", "requests", "urllib3"}
# OpenTelemetry's OTLP/HTTP exporter is built on a requests.Session; handing it one that ignores proxy settings
# is the only way to keep export traffic off an HTTP_PROXY sidecar, so that one module may import requests.
ALLOWED = {("meshtrace/exporters/otlp.py", "requests")}


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every absolute module name a file imports (for `from a import b`, both `a` and `a.b`)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def sources(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


@pytest.mark.parametrize("path", sources(CORE), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_imports_neither_integrations_nor_proxy(path: Path) -> None:
    bad = [(line, name) for line, name in imports(path)
           if name.startswith(("meshtrace.integrations", "meshtrace.proxy"))]
    assert not bad, f"{path.relative_to(ROOT)} imports the layers above it: {bad}"


@pytest.mark.parametrize("path", sources(CORE), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_imports_no_web_framework(path: Path) -> None:
    here = str(path.relative_to(ROOT))
    bad = [(line, name) for line, name in imports(path)
           if name.split(".")[0] in FRAMEWORKS and (here, name.split(".")[0]) not in ALLOWED]
    assert not bad, f"{path.relative_to(ROOT)} imports a framework only an integration may patch: {bad}"


@pytest.mark.parametrize("path", sources(INTEGRATIONS) + sources(PROXY), ids=lambda p: str(p.relative_to(ROOT)))
def test_upper_layers_use_only_public_core_api(path: Path) -> None:
    bad = []
    for line, name in imports(path):
        parts = name.split(".")
        if parts[0] != "meshtrace" or parts[1:2] in (["integrations"], ["proxy"]):
            continue
        if any(part.startswith("_") and part != "__version__" for part in parts[1:]):
            bad.append((line, name))
    assert not bad, f"{path.relative_to(ROOT)} reaches into private meshtrace modules: {bad}"


def test_proxy_does_not_import_integrations() -> None:
    bad = [(str(path.relative_to(ROOT)), line, name) for path in sources(PROXY)
           for line, name in imports(path) if name.startswith("meshtrace.integrations")]
    assert not bad


def test_rules_see_a_violation(tmp_path: Path) -> None:
    """The checker itself must notice a forbidden import, or the tests above prove nothing."""
    sample = tmp_path / "sample.py"
    sample.write_text("from meshtrace.proxy import server\nimport flask\n")
    names = {name for _, name in imports(sample)}
    assert "meshtrace.proxy" in names
    assert "flask" in names
