"""The documentation builds with every link and anchor intact, and the README's links into it resolve."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> pathlib.Path:
    mkdocs = shutil.which("mkdocs", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("mkdocs")
    assert mkdocs, "mkdocs is missing: install the test extra (pip install -e '.[test]')"
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(out)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_docs_build_strict(site):
    pages = {p.stem for p in (ROOT / "docs").glob("*.md")}
    assert {"index", "editors", "server", "library", "model", "method", "development"} <= pages
    for page in pages:
        built = site / ("index.html" if page == "index" else f"{page}/index.html")
        assert built.is_file(), page


def test_readme_links_resolve(site):
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        if link.startswith(("http://", "https://")):
            continue
        target, _, anchor = link.partition("#")
        assert (ROOT / target).exists(), f"README links to a missing file: {link}"
        if anchor:
            assert target.startswith("docs/") and target.endswith(".md"), link
            html = (site / pathlib.Path(target).stem / "index.html").read_text()
            assert f'id="{anchor}"' in html, f"README links to a missing heading: {link}"


def test_readme_stays_short():
    """What a newcomer needs on a screen or two; the rest lives in docs/."""
    assert len((ROOT / "README.md").read_text()) < 12_000
