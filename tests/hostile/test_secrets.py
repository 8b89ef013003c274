"""Secrets: the reconciler never reads or logs shared `.env` contents, and what it writes
locally (database, logs) is owner-only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from reconciler.cli.main import main as cli
from tests.support import app_commit, make_app_repo, make_decl_repo, reconcile, settings_for, write_site

DOMAIN = "secret.example.com"
SECRET = "APP_KEY=base64:TOP-SECRET-do-not-leak-4242"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_env_never_read_and_state_is_owner_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = make_app_repo(tmp_path / "app")
    decl = make_decl_repo(tmp_path / "decl")
    base = tmp_path / "srv"
    write_site(decl, DOMAIN, server="local", base_path=str(base), repository=str(app),
               script="ls -la\necho deployed\n")
    state = tmp_path / "state"
    settings = settings_for(decl, state)
    assert reconcile(settings)[DOMAIN].sync == "Synced"
    # The operator puts the secret into the shared .env; the next deploys link it.
    env = base / "deployments" / DOMAIN / "shared" / ".env"
    env.write_text(SECRET + "\n")
    app_commit(app, "v2")
    assert reconcile(settings)[DOMAIN].sync == "Synced"
    assert (base / DOMAIN / ".env").read_text().strip() == SECRET, "the release links the shared .env"

    for args in (["status", "--json"], ["history", DOMAIN, "--json"], ["logs", DOMAIN]):
        assert cli(["--repo", str(decl), "--state-dir", str(state), *args]) == 0
    out = capsys.readouterr()
    assert "TOP-SECRET" not in out.out + out.err
    for file in state.rglob("*"):
        if file.is_file():
            assert b"TOP-SECRET" not in file.read_bytes(), file
            assert _mode(file) & 0o077 == 0, f"{file} is readable by others: {oct(_mode(file))}"
        else:
            assert _mode(file) & 0o077 == 0, f"{file} is open to others: {oct(_mode(file))}"
    assert _mode(state) & 0o077 == 0
    assert (state / "reconciler.db").exists()


def test_database_is_created_owner_only_even_with_a_lax_umask(tmp_path: Path) -> None:
    old = os.umask(0o000)
    try:
        from reconciler.engine.store import Store

        Store(tmp_path / "state" / "reconciler.db").close()
    finally:
        os.umask(old)
    assert _mode(tmp_path / "state" / "reconciler.db") == 0o600
    assert _mode(tmp_path / "state") == 0o700
