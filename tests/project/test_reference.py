"""The reference (docs/reference/*.md, man/*) is written from the code by `python -m docgen`:
the committed copy must be what the code writes today, and it must name every key of the
declaration and settings models, every command and its exit statuses, every route and metric."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from docgen import roff, sources
from docgen.__main__ import OUTPUTS, write
from reconciler.cli.commands import COMMANDS, EXITS
from reconciler.config import ApiToken, NotifyTarget, Settings
from reconciler.core.declarations import SiteDeclaration
from reconciler.core.health import HealthCheck
from reconciler.window_settings import Window

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_reference_is_what_the_code_writes_today(tmp_path: Path) -> None:
    """Any change of a model, a flag, a route or a metric without `python -m docgen` fails here."""
    write(tmp_path)
    stale = []
    for folder, pages in OUTPUTS.items():
        for name in pages:
            committed = ROOT / folder / name
            if not committed.is_file() or committed.read_text() != (tmp_path / folder / name).read_text():
                stale.append(f"{folder}/{name}")
    assert not stale, f"out of date: {', '.join(stale)}; run `python -m docgen` and commit the result"


def test_nothing_else_lives_in_the_generated_folders() -> None:
    """A page the generator no longer writes would stay behind, stale, unless the folder holds only its pages."""
    for folder, pages in OUTPUTS.items():
        extra = sorted(p.name for p in (ROOT / folder).iterdir()) if (ROOT / folder).is_dir() else []
        assert extra == sorted(pages), f"{folder}: {extra} (run `python -m docgen`; remove pages it no longer writes)"


@pytest.mark.parametrize(("page", "manual", "models"), [
    ("site-keys.md", "reconciler-site.5", [SiteDeclaration, HealthCheck]),
    ("settings.md", "reconciler.toml.5", [Settings, NotifyTarget, ApiToken, Window]),
])
def test_every_model_key_is_in_its_page_and_its_man_page_with_a_description(tmp_path: Path, page: str, manual: str,
                                                                           models: list[type]) -> None:
    """Each field of the declaration and settings models appears as a key, and none lacks a description."""
    write(tmp_path)
    text = (tmp_path / "docs/reference" / page).read_text()
    man = (tmp_path / "man" / manual).read_text()
    for model in models:
        for name, info in model.model_fields.items():  # type: ignore[attr-defined]
            assert f"| `{name}` |" in text, f"{model.__name__}.{name} missing from {page}"
            assert f"\\fB{roff.esc(name)}\\fR" in man, f"{model.__name__}.{name} missing from {manual}"
            assert info.description, f"{model.__name__}.{name} has no Field(description=...)"


def test_every_command_and_flag_is_in_the_cli_page_with_its_exit_statuses(tmp_path: Path) -> None:
    """The command table, its flags and the exit table agree, and the page lists them all."""
    assert set(EXITS) == set(COMMANDS), "every command needs its exit statuses in cli.commands.EXITS"
    write(tmp_path)
    text = (tmp_path / "docs/reference/cli.md").read_text()
    for command in sources.commands():
        assert f"## {command.name}\n" in text
        assert any(code == 0 for code, _ in command.exits), command.name
        for option in command.options:
            assert f"`{option.usage}`" in text
    assert "`--config CONFIG`" in text


def test_every_route_and_metric_is_in_its_page(tmp_path: Path) -> None:
    """The route table and the collector's families are what the HTTP and metrics pages list."""
    write(tmp_path)
    http = (tmp_path / "docs/reference/http.md").read_text()
    paths = {r.path for r in sources.routes()}
    assert {"/metrics", "/hooks/git", "/api/sites/{domain}/rollback"} <= paths
    assert all(f"`{p}`" in http for p in paths)
    metrics = (tmp_path / "docs/reference/metrics.md").read_text()
    names = [m.name for m in sources.metrics()]
    assert "reconciler_deploys" in names and "`reconciler_deploys_total`" in metrics
    assert all(f"`{n}`" in metrics for n in names)
    fields, _ = sources.payload()
    notifications = (tmp_path / "docs/reference/notifications.md").read_text()
    assert all(f"`{f}`" in notifications for f in fields)


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff (groff-base) is not installed")
@pytest.mark.parametrize("manual", sorted(roff.PAGES))
def test_each_man_page_renders_without_a_warning(manual: str) -> None:
    """`man ./man/reconciler.1` shows a page: groff formats each committed page with every warning on."""
    run = subprocess.run(["groff", "-man", "-ww", "-Tutf8", str(ROOT / "man" / manual)],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0 and not run.stderr, run.stderr
    shown = re.sub(".\x08", "", run.stdout)  # grotty's overstrike bold
    assert "NAME" in shown and "SEE ALSO" in shown


def test_python_m_docgen_writes_the_pages_where_it_is_told(tmp_path: Path) -> None:
    """The command the failure message names works from a checkout."""
    run = subprocess.run([sys.executable, "-m", "docgen", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "man/reconciler.1").is_file() and (tmp_path / "docs/reference/cli.md").is_file()
