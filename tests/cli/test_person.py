"""The person behind a CLI action: who ran sudo (`SUDO_USER`) when the CLI runs as the service
user, else the git identity, else the OS user. History's "who asked" of `retry`/`redeploy` and
the author of a `rollback`/`unpin` pin commit name that person; `--author` still wins. The git
identity is read by the real `git config` from a real global config file."""

from __future__ import annotations

import getpass
import socket
from pathlib import Path

import pytest

from reconciler.cli.person import person
from tests.support import git
from tests.support.cli_world import DOMAIN, MARK_SCRIPT, CliWorld

HOST = socket.gethostname()


@pytest.fixture(name="git_home")
def git_home_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A global git config of its own (and no identity from the test environment)."""
    config = tmp_path / "gitconfig"
    config.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for key in ("SUDO_USER", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)  # no repository's own config either
    return config


def test_sudo_user_comes_before_the_service_users_git_identity(git_home: Path) -> None:
    git_home.write_text("[user]\n\tname = Reconciler Service\n\temail = svc@example.com\n")
    assert person({"SUDO_USER": "alice"}) == f"alice <alice@{HOST}>"


def test_the_git_identity_names_someone_running_it_as_themselves(git_home: Path) -> None:
    git_home.write_text("[user]\n\tname = Ana Lima\n\temail = ana@agency.test\n")
    assert person({}) == "Ana Lima <ana@agency.test>"
    # git's own environment variables come before its config, as for a commit.
    assert person({"GIT_AUTHOR_NAME": "Bo", "GIT_AUTHOR_EMAIL": "bo@agency.test"}) == "Bo <bo@agency.test>"


def test_without_sudo_or_git_identity_it_is_the_os_user(git_home: Path) -> None:
    user = getpass.getuser()
    assert person({}) == f"{user} <{user}@{HOST}>"
    git_home.write_text("[user]\n\tname = Ana Lima\n")  # a name without an email
    assert person({}) == f"Ana Lima <{user}@{HOST}>"


def test_what_would_break_name_and_email_is_removed(git_home: Path) -> None:
    assert person({"SUDO_USER": "eve<x>\nroot"}) == f"eve x root <eve x root@{HOST}>"
    assert person({"GIT_AUTHOR_NAME": "M <m@x>", "GIT_AUTHOR_EMAIL": "m@x"}) == "M m@x <m@x>"


def test_cli_actions_under_sudo_name_the_person_in_history_and_pin_commits(
        world: CliWorld, git_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    git_home.write_text("[user]\n\tname = reconciler\n\temail = reconciler@localhost\n")  # the service user's
    monkeypatch.setenv("SUDO_USER", "alice")
    world.declare(script=MARK_SCRIPT)
    world.ok("reconcile")
    first = world.active()
    assert first is not None

    world.ok("redeploy", DOMAIN)
    newest = world.history()[0]
    assert (newest["trigger"], newest["requested_by"]) == ("redeploy", f"alice <alice@{HOST}>"), newest
    world.ok("rollback", DOMAIN, first)
    assert git(world.decl, "log", "-1", "--format=%an <%ae>|%cn", "main") == f"alice <alice@{HOST}>|reconciler"
    world.ok("reconcile")
    switch = next(row for row in world.history() if row["release"] == first)["activations"][0]
    assert (switch["trigger"], switch["requested_by"]) == ("rollback", f"alice <alice@{HOST}>"), switch

    # --author still wins.
    world.ok("unpin", DOMAIN, "--author", "Ops Bot <ops@agency.test>")
    assert git(world.decl, "log", "-1", "--format=%an <%ae>", "main") == "Ops Bot <ops@agency.test>"
