"""Real git repositories and settings for tests: an app repo (Laravel-like, ships storage/)
and a declarations repo with sites.d/. Commits go through the git CLI, like an operator's."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.config import Settings
from reconciler.engine.converge import Reconciler, SiteOutcome
from reconciler.engine.store import Store


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def make_app_repo(path: Path) -> Path:
    """A small app that, like Laravel, ships storage/ and public/index.php."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "public").mkdir()
    (path / "public" / "index.php").write_text("<?php echo 'v1';\n")
    (path / "storage" / "logs").mkdir(parents=True)
    (path / "storage" / "logs" / ".gitkeep").write_text("")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "v1")
    return path


def app_commit(path: Path, message: str, files: Mapping[str, str] | None = None) -> str:
    """Commit a change to the app repo and return the new head sha."""
    for name, content in (files or {"public/index.php": f"<?php echo '{message}';\n"}).items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", message)
    return git(path, "rev-parse", "HEAD")


def make_decl_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "sites.d").mkdir()
    (path / "README").write_text("declarations\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "init")
    return path


def toml_value(value: Any) -> str:
    if isinstance(value, str):
        return '"""\n' + value + '"""' if "\n" in value else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def write_site(repo: Path, domain: str, *, commit: bool = True, raw: str | None = None, **fields: Any) -> Path:
    """Write sites.d/<domain>.toml (from `fields`, or `raw` text) and commit it."""
    file = repo / "sites.d" / f"{domain}.toml"
    file.write_text(raw if raw is not None else "".join(f"{k} = {toml_value(v)}\n" for k, v in fields.items()))
    if commit:
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"declare {domain}")
    return file


def remove_site(repo: Path, domain: str) -> None:
    git(repo, "rm", "-q", f"sites.d/{domain}.toml")
    git(repo, "commit", "-q", "-m", f"remove {domain}")


def settings_for(repo: Path, state: Path, **extra: Any) -> Settings:
    return Settings(repo=repo, state_dir=state, **extra)


def reconcile(settings: Settings, site: str | None = None, dry_run: bool = False) -> dict[str, SiteOutcome]:
    """Run one real pass (fresh store connection and transports, as the CLI does)."""

    async def go() -> list[SiteOutcome]:
        reconciler = Reconciler(settings, Store(settings.db_path))
        try:
            return await reconciler.run_pass(site, dry_run=dry_run)
        finally:
            await reconciler.close()
            reconciler.store.close()

    return {o.domain: o for o in asyncio.run(go())}
