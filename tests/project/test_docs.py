"""The documentation keeps up with the code: the declarations page lists every key a site file may
hold and the guide's reconciler.toml examples name every setting (a key added to a model without
documentation fails here); every notify event is documented; the README stays a short front page
whose links all lead to pages that exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from reconciler.config import Settings
from reconciler.core.declarations import SiteDeclaration

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"


def _guide() -> str:
    return "\n".join(page.read_text() for page in sorted((DOCS / "guide").glob("*.md")))


def test_every_declaration_key_is_in_the_declarations_reference() -> None:
    text = (DOCS / "guide" / "declarations.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.MULTILINE))
    assert set(SiteDeclaration.model_fields) <= documented, sorted(set(SiteDeclaration.model_fields) - documented)
    assert "UTC clock" in text


def test_every_configuration_key_is_in_a_guide_toml_example() -> None:
    """reconciler.toml keys (`shard` among them): each appears as `key = ...` (or `[[key]]`), maybe
    commented out, in one of the guide's configuration examples."""
    text = _guide()
    missing = [key for key in Settings.model_fields
               if not re.search(rf"^ *#? *(\[\[{key}\]\]|{key} *=)", text, flags=re.MULTILINE)]
    assert not missing, missing


def test_the_readme_is_a_short_front_page() -> None:
    text = README.read_text()
    assert len(text.encode()) <= 8 * 1024, len(text.encode())
    for command in ("make demo", "make test", "## Quickstart"):
        assert command in text


def test_every_relative_link_of_the_readme_and_the_docs_leads_to_a_file() -> None:
    """mkdocs --strict checks the links between pages; the README is outside docs/, so here."""
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README.read_text())
    assert any(link.startswith("docs/") for link in links), links
    broken = [link for link in links if not (ROOT / link).is_file()]
    assert not broken, broken


def test_make_test_builds_the_docs_strictly_into_an_ignored_site_dir() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^docs:.*\n(\t.*\n)*\t.*mkdocs build --strict", makefile, flags=re.MULTILINE), makefile
    test_target = re.search(r"^test:.*\n((\t.*\n)*)", makefile, flags=re.MULTILINE)
    assert test_target is not None and "$(MAKE) docs" in test_target.group(1)
    assert "/site/" in (ROOT / ".gitignore").read_text().splitlines()


def test_the_docs_build_with_no_warnings(tmp_path: Path) -> None:
    """`mkdocs build --strict`: a broken link or anchor between pages, or a page named in nav
    that does not exist, fails the build."""
    mkdocs = Path(sys.executable).parent / "mkdocs"
    done = subprocess.run([str(mkdocs), "build", "--strict", "--quiet", "-d", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "operations" / "runbook" / "index.html").is_file()
