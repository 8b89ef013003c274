"""Fleet defaults and templates in a declarations repository (core.layers): write
`sites.d/_defaults.toml` or `templates/<name>.toml` as text, and commit it."""

from __future__ import annotations

from pathlib import Path

from tests.support.repos import git


def _write(repo: Path, relative: str, text: str, commit: bool) -> Path:
    file = repo / relative
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text)
    if commit:
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"write {relative}")
    return file


def write_defaults(repo: Path, text: str, *, commit: bool = True) -> Path:
    return _write(repo, "sites.d/_defaults.toml", text, commit)


def write_template(repo: Path, name: str, text: str, *, commit: bool = True) -> Path:
    return _write(repo, f"templates/{name}.toml", text, commit)
