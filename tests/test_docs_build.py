"""The docs site builds offline with `mkdocs build --strict`, every nav page is in the output, links resolve."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
MKDOCS = Path(sys.executable).parent / "mkdocs"


def _nav_pages(nav: object) -> list[str]:
    """Every Markdown file named in mkdocs.yml's nav, depth first."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in _nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in _nav_pages(value)]
    return []


def _config() -> dict[str, object]:
    loaded = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_every_docs_page_is_in_the_nav() -> None:
    pages = _nav_pages(_config()["nav"])
    on_disk = sorted(str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md"))
    assert sorted(pages) == on_disk
    assert len(pages) == len(set(pages))


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    # --strict turns every warning into a failure: a broken internal link or anchor, a page missing from the
    # nav, an unknown config key. No plugin fetches anything, so this runs without a network.
    result = subprocess.run([str(MKDOCS), "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    for page in _nav_pages(_config()["nav"]):
        html = site / re.sub(r"\.md$", ".html", page)
        assert html.is_file(), f"{page} was not built"
        text = html.read_text(encoding="utf-8")
        assert "<h1" in text, f"{page} has no title"
    assert (site / "images" / "bookinfo-graph.svg").is_file()
    # Internal links in the built pages point at files that exist (strict mode checks the Markdown side).
    for html in site.rglob("*.html"):
        if html.name == "404.html":
            continue                    # served from any depth, so mkdocs gives it root-absolute links
        for target in re.findall(r'href="([^"#:]+\.html)(?:#[^"]*)?"', html.read_text(encoding="utf-8")):
            assert (html.parent / target).resolve().is_file(), f"{html.name} links to missing {target}"
