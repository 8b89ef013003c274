"""Real git repositories for tests: an app repo (Laravel-like, ships storage/) and a
declarations repo with sites.d/. Commits go through the git CLI, like an operator's."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.core.declarations import SITES_DIR, SiteDeclaration

# What a site declaration needs beside its fields, for tests that build one in memory.
DECLARATION_DEFAULTS: dict[str, Any] = {
    "domain": "shop.example.com",
    "server": "web-1",
    "base_path": "/home/brokeforge",
    "repository": "git@github.com:acme/shop.git",
}


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
    (path / SITES_DIR).mkdir()
    (path / "README").write_text("declarations\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "init")
    return path


def toml_value(value: Any) -> str:
    """A TOML value; a string with a newline becomes a multi-line basic string (scripts)."""
    if isinstance(value, str):
        return '"""\n' + value + '"""' if "\n" in value else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table: health = { url = "...", retries = 2 }
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return str(value)


def site_file(repo: Path, domain: str) -> Path:
    return repo / SITES_DIR / f"{domain}.toml"


def write_site(repo: Path, domain: str, *, commit: bool = True, raw: str | None = None, **fields: Any) -> Path:
    """Write sites.d/<domain>.toml (from `fields`, or `raw` text) and commit it."""
    file = site_file(repo, domain)
    file.write_text(raw if raw is not None else "".join(f"{k} = {toml_value(v)}\n" for k, v in fields.items()))
    if commit:
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"declare {domain}")
    return file


def remove_site(repo: Path, domain: str) -> None:
    git(repo, "rm", "-q", f"{SITES_DIR}/{domain}.toml")
    git(repo, "commit", "-q", "-m", f"remove {domain}")


def site_declaration(**fields: Any) -> SiteDeclaration:
    """A validated declaration in memory (no repository): DECLARATION_DEFAULTS plus `fields`
    (with `servers`, no default `server`)."""
    defaults = {k: v for k, v in DECLARATION_DEFAULTS.items() if k != "server" or "servers" not in fields}
    return SiteDeclaration(**{**defaults, **fields})


def ssh_key(path: Path) -> Path:
    """A new ed25519 key pair at `path` (and `path`.pub), no passphrase: for signing commits."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)], check=True)
    return path
