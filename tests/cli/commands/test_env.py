"""`reconciler env keys|set|edit D`: the site's env file is decrypted with age_identity_file,
changed, encrypted again to every recipient listed in the repository and committed with the
person as author, to a local repository or pushed to a Git host; `keys` prints names only;
`edit` commits nothing when the editor fails or changes nothing, and its private copy is always
removed; nothing secret reaches the commit message or the output."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.engine import sealed
from tests.support import git, make_decl_repo, write_site
from tests.support.age_keys import AgeKey, age_key, seal, write_recipients
from tests.support.config import write_config
from tests.support.world import CliRun, cli_in_process

DOMAIN = "shop.example.com"
SECRET = "cli-secret-55e1"


@dataclass
class EnvWorld:
    tmp: Path
    decl: Path
    key: AgeKey
    team: AgeKey
    config: Path

    def cli(self, *args: str) -> CliRun:
        return cli_in_process(["--config", str(self.config), *args])

    def tip(self, repo: Path | None = None) -> str:
        return git(repo or self.decl, "rev-parse", "main")

    def env_text(self, key: AgeKey | None = None, repo: Path | None = None) -> str:
        data = subprocess.run(["git", "-C", str(repo or self.decl), "show", f"main:sites.d/{DOMAIN}.env.age"],
                              capture_output=True, check=True).stdout
        return sealed.decrypt(data, sealed.load_identities((key or self.key).identity_file), "f").text


@pytest.fixture(name="env_world")
def env_world_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> EnvWorld:
    monkeypatch.chdir(tmp_path)
    decl = make_decl_repo(tmp_path / "decl")
    write_site(decl, DOMAIN, server="local", base_path=str(tmp_path / "srv"), repository=str(tmp_path / "app"))
    key, team = age_key(tmp_path / "reconciler.key"), age_key(tmp_path / "team.key")
    write_recipients(decl, key.public, team.public)
    config = write_config(tmp_path / "reconciler.toml", repo=decl, state=tmp_path / "state",
                          age_identity_file=str(key.identity_file))
    return EnvWorld(tmp_path, decl, key, team, config)


def test_set_creates_the_file_encrypted_to_every_recipient_authored_by_the_person(env_world: EnvWorld) -> None:
    rc, out, err = env_world.cli("env", "set", DOMAIN, f"DB_PASSWORD={SECRET}", "APP_ENV=production",
                                 "--author", "Ann Operator <ann@example.com>")
    assert rc == 0, (out, err)
    assert env_world.env_text() == f"DB_PASSWORD={SECRET}\nAPP_ENV=production\n"
    assert env_world.env_text(env_world.team) == env_world.env_text(), "the team's key opens it too"
    assert git(env_world.decl, "log", "-1", "--format=%an <%ae>") == "Ann Operator <ann@example.com>"
    message = git(env_world.decl, "log", "-1", "--format=%B")
    assert "DB_PASSWORD" in message and SECRET not in message and SECRET not in out + err
    rc, out, err = env_world.cli("env", "set", DOMAIN, "APP_ENV=staging")
    assert rc == 0, (out, err)
    assert env_world.env_text() == f"DB_PASSWORD={SECRET}\nAPP_ENV=staging\n"


def test_set_reads_a_bare_keys_value_from_stdin(env_world: EnvWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{SECRET}\n"))
    rc, out, err = env_world.cli("env", "set", DOMAIN, "API_TOKEN")
    assert rc == 0, (out, err)
    assert env_world.env_text() == f"API_TOKEN={SECRET}\n"


def test_keys_prints_names_only(env_world: EnvWorld) -> None:
    seal(env_world.decl, DOMAIN, f"# comment\nDB_PASSWORD={SECRET}\nAPP_KEY=base64:zz\n", env_world.key.public)
    rc, out, err = env_world.cli("env", "keys", DOMAIN)
    assert rc == 0, (out, err)
    assert out.split() == ["DB_PASSWORD", "APP_KEY"] and SECRET not in out + err


def test_set_with_the_same_value_commits_nothing(env_world: EnvWorld) -> None:
    seal(env_world.decl, DOMAIN, "A=1\n", env_world.key.public)
    tip = env_world.tip()
    rc, out, _ = env_world.cli("env", "set", DOMAIN, "A=1")
    assert rc == 0 and "nothing committed" in out and env_world.tip() == tip


def _editor(tmp: Path, body: str) -> str:
    script = tmp / "editor.sh"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return str(script)


def test_edit_commits_what_the_editor_leaves_and_removes_the_private_copy(
        env_world: EnvWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    seal(env_world.decl, DOMAIN, "A=1\n", env_world.key.public)
    seen = env_world.tmp / "seen"
    # The editor records where its file is and its mode, then appends a line.
    monkeypatch.setenv("EDITOR", _editor(env_world.tmp, f'stat -c "%a %n" "$1" > {seen}\necho B=2 >> "$1"\n'))
    monkeypatch.delenv("VISUAL", raising=False)
    rc, out, err = env_world.cli("env", "edit", DOMAIN)
    assert rc == 0, (out, err)
    assert env_world.env_text() == "A=1\nB=2\n"
    mode, path = seen.read_text().split()
    assert mode == "600" and not Path(path).exists() and not Path(path).parent.exists()
    assert git(env_world.decl, "log", "-1", "--format=%B").startswith(f"env of {DOMAIN}: edited")


@pytest.mark.parametrize("body", ["exit 3\n", "true\n", 'echo B=2 >> "$1"; exit 1\n'])
def test_edit_commits_nothing_when_the_editor_fails_or_changes_nothing(
        env_world: EnvWorld, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    seal(env_world.decl, DOMAIN, "A=1\n", env_world.key.public)
    tip = env_world.tip()
    monkeypatch.setenv("EDITOR", _editor(env_world.tmp, body))
    monkeypatch.delenv("VISUAL", raising=False)
    before = {p.name for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("reconciler-env-*")}
    rc, out, err = env_world.cli("env", "edit", DOMAIN)
    assert env_world.tip() == tip
    assert (rc == 0 and "nothing committed" in out) if body == "true\n" else (rc == 1 and "nothing committed" in err)
    after = {p.name for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("reconciler-env-*")}
    assert after <= before, "the private copy is removed"


def test_without_an_identity_or_recipients_nothing_is_committed(env_world: EnvWorld, tmp_path: Path) -> None:
    seal(env_world.decl, DOMAIN, "A=1\n", env_world.key.public)
    tip = env_world.tip()
    bare = write_config(tmp_path / "nokey.toml", repo=env_world.decl, state=tmp_path / "state")
    rc, _, err = cli_in_process(["--config", str(bare), "env", "set", DOMAIN, "A=2"])
    assert rc == 2 and "age_identity_file" in err and env_world.tip() == tip
    git(env_world.decl, "rm", "-q", ".reconciler/recipients")
    git(env_world.decl, "commit", "-q", "-m", "no recipients")
    tip = env_world.tip()
    rc, _, err = env_world.cli("env", "set", DOMAIN, "A=2")
    assert rc == 2 and ".reconciler/recipients" in err and env_world.tip() == tip


def test_an_undeclared_site_or_a_bad_assignment_is_refused(env_world: EnvWorld) -> None:
    tip = env_world.tip()
    rc, _, err = env_world.cli("env", "set", "blog.example.com", "A=1")
    assert rc == 1 and "blog.example.com" in err
    rc, _, err = env_world.cli("env", "set", DOMAIN, "1BAD=x")
    assert rc == 1 and "1BAD" in err
    assert env_world.tip() == tip


def test_set_on_a_git_host_pushes_the_commit(env_world: EnvWorld, tmp_path: Path) -> None:
    host = tmp_path / "host.git"
    git(tmp_path, "clone", "-q", "--bare", str(env_world.decl), str(host))
    config = write_config(tmp_path / "remote.toml", repo=f"file://{host}", state=tmp_path / "rstate",
                          age_identity_file=str(env_world.key.identity_file))
    rc, out, err = cli_in_process(["--config", str(config), "env", "set", DOMAIN, f"DB_PASSWORD={SECRET}",
                                   "--author", "Ann Operator <ann@example.com>"])
    assert rc == 0, (out, err)
    assert env_world.env_text(repo=host) == f"DB_PASSWORD={SECRET}\n"
    assert git(host, "log", "-1", "--format=%an") == "Ann Operator"
    assert stat.S_ISDIR((tmp_path / "rstate").stat().st_mode)
