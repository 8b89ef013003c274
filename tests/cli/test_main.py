"""The command line contract of SPEC section 5: exit codes, output, and what each command
changes (and does not change) in the declarations repository, on the server and in the
state database. Sites use `server = "local"` with a base path under tmp_path."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import support
from tests.support import app_commit, git, neutral_world, write_config, write_site

DOMAIN = "shop.example.com"
OTHER = "blog.example.com"
# The script prints the commit it built: each deployment's log is recognisable.
MARK_SCRIPT = 'echo "built $(git rev-parse HEAD)"\n'


@dataclass
class World(support.World):
    """Sites on "local"; the CLI runs in this process with --repo/--state-dir and a config file
    that only opts in to local sites (the cwd is neutral), as an operator's shell would."""

    def flags(self, repo: Path | None = None) -> list[str]:
        opt_in = self.tmp / "allow-local.toml"
        if not opt_in.is_file():
            write_config(opt_in, interval=None)  # allow_local = true, nothing else
        return ["--repo", str(repo or self.decl), "--state-dir", str(self.state), "--config", str(opt_in)]

    def committed(self, domain: str = DOMAIN, repo: Path | None = None) -> str:
        return git(repo or self.decl, "show", f"main:sites.d/{domain}.toml")

    # -- the CLI --------------------------------------------------------------------------------

    def run(self, *argv: str) -> support.CliRun:
        """The CLI with exactly these arguments."""
        return support.cli_in_process(list(argv))

    def cli(self, *args: str, repo: Path | None = None) -> support.CliRun:
        """The CLI on this world's declarations repository and state dir."""
        return self.run_cli(*args, repo=repo)

    def ok(self, *args: str, repo: Path | None = None) -> str:
        rc, out, err = self.cli(*args, repo=repo)
        assert rc == 0, (args, out, err)
        return out

    def history(self, domain: str = DOMAIN) -> list[dict[str, Any]]:
        views = json.loads(self.ok("history", domain, "--json"))
        assert isinstance(views, list)
        return views

    def status(self) -> dict[str, dict[str, Any]]:
        views = json.loads(self.ok("status", "--json"))
        assert isinstance(views, list)
        return {v["domain"]: v for v in views}

    def deploy_n(self, n: int, domain: str = DOMAIN, **fields: Any) -> list[str]:
        """Declare the site and deploy `n` app commits; returns the commits, oldest first."""
        self.declare(domain, script=MARK_SCRIPT, **fields)
        commits = []
        for i in range(n):
            if i:
                app_commit(self.app, f"{domain} v{i + 1}")
            commits.append(git(self.app, "rev-parse", "HEAD"))
            self.ok("reconcile")
        assert len(self.releases(domain)) >= min(n, fields.get("keep", 14))
        return commits


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def _deployment_rows(state: Path) -> int:
    db = state / "reconciler.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")}
        if "deployments" not in tables:
            return 0
        return int(conn.execute("select count(*) from deployments").fetchone()[0])


@pytest.fixture(name="world")
def world_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return neutral_world(tmp_path, monkeypatch, World)


# --- reconcile: exit codes ----------------------------------------------------------------------------


def test_reconcile_exits_0_when_all_synced(world: World) -> None:
    world.declare(script="echo hello\n")
    world.declare(OTHER)
    rc, out, err = world.cli("reconcile")
    assert rc == 0, (out, err)
    assert f"{DOMAIN}: Synced/Healthy" in out and f"{OTHER}: Synced/Healthy" in out
    assert len(world.releases()) == 1 and len(world.releases(OTHER)) == 1
    # Nothing to do is still all Synced.
    rc, out, err = world.cli("reconcile")
    assert rc == 0, (out, err)


def test_reconcile_exits_1_when_a_script_fails(world: World) -> None:
    world.declare(script="echo ok\nfalse\n")
    world.declare(OTHER)
    rc, out, err = world.cli("reconcile")
    assert rc == 1, (out, err)
    assert f"{DOMAIN}: Failed" in out
    assert f"{OTHER}: Synced/Healthy" in out
    assert not (world.base / DOMAIN).exists(), "a failed deploy must not go live"
    # Failure memory: not retried, still not Synced.
    rc, out, err = world.cli("reconcile")
    assert rc == 1, (out, err)


def test_reconcile_exits_1_when_a_declaration_is_invalid(world: World) -> None:
    world.declare(OTHER, colour="blue")
    world.declare()
    rc, out, err = world.cli("reconcile")
    assert rc == 1, (out, err)
    assert f"{OTHER}: Invalid" in out
    assert f"{DOMAIN}: Synced/Healthy" in out, "a valid site keeps reconciling beside an invalid one"
    assert len(world.releases()) == 1
    assert not world.deployments(OTHER).exists()


@pytest.mark.parametrize("server", ["a..b", "a" * 64, "127.0.0.1:99999"])
def test_reconcile_reports_a_server_the_transport_cannot_use_as_invalid(world: World, server: str) -> None:
    """Security review M4(a): these passed validation and then crashed every pass inside
    asyncssh/socket (idna UnicodeError, OverflowError). They are Invalid now; the rest deploys."""
    world.declare(OTHER, server=server)
    world.declare()
    rc, out, err = world.cli("reconcile")
    assert rc == 1, (out, err)
    assert "Traceback" not in err
    assert f"{OTHER}: Invalid" in out and "server" in out
    assert f"{DOMAIN}: Synced/Healthy" in out
    assert len(world.releases()) == 1
    views = world.status()
    assert views[OTHER]["sync"] == "Invalid" and "not a usable server" in views[OTHER]["message"]


@pytest.mark.parametrize(
    "config_text",
    [
        pytest.param("colour = 'blue'\n", id="unknown-key"),
        pytest.param("concurrency = 0\n", id="concurrency-0"),
        pytest.param("concurrency = [\n", id="toml-syntax-error"),
        pytest.param("interval = 'often'\n", id="wrong-type"),
    ],
)
def test_reconcile_exits_2_on_a_bad_config_and_touches_nothing(world: World, config_text: str) -> None:
    world.declare()
    config = world.tmp / "reconciler.toml"
    config.write_text(config_text)
    rc, out, err = world.run(
        "--config", str(config), "--repo", str(world.decl), "--state-dir", str(world.state), "reconcile"
    )
    assert rc == 2, (out, err)
    assert str(config) in err, err
    assert _tree(world.base) == []
    assert not world.state.exists()


def test_reconcile_exits_2_when_the_config_file_is_missing(world: World) -> None:
    world.declare()
    rc, out, err = world.run("--config", str(world.tmp / "nope.toml"), "--repo", str(world.decl), "reconcile")
    assert rc == 2, (out, err)
    assert _tree(world.base) == []


def test_reconcile_exits_2_when_the_declarations_repo_does_not_exist(world: World) -> None:
    rc, out, err = world.cli("reconcile", repo=world.tmp / "no-such-repo")
    assert rc == 2, (out, err)
    assert "no-such-repo" in err
    not_a_repo = world.tmp / "plain-dir"
    (not_a_repo / "sites.d").mkdir(parents=True)
    rc, out, err = world.cli("reconcile", repo=not_a_repo)
    assert rc == 2, (out, err)


def test_a_plain_directory_inside_another_git_repo_is_not_a_declarations_repo(world: World) -> None:
    # app/public is a plain directory inside the app's work tree: it is not the declarations
    # repository, and the enclosing repository must not be used in its place (nor committed to).
    rc, out, err = world.cli("reconcile", repo=world.app / "public")
    assert rc == 2, (out, err)


# --- status / history ---------------------------------------------------------------------------------


def test_status_with_an_empty_state_dir_shows_declared_sites_as_unknown(world: World) -> None:
    world.declare()
    world.declare(OTHER, colour="blue")
    assert not world.state.exists()
    rc, out, err = world.cli("status")
    assert rc == 0, (out, err)
    assert DOMAIN in out and OTHER in out
    views = world.status()
    assert sorted(views) == [OTHER, DOMAIN]
    never = views[DOMAIN]
    assert (never["sync"], never["health"]) == ("Unknown", "Unknown"), never
    assert never["message"], "a never reconciled site must say so"
    assert never["active_release"] is None and never["server"] == "local"
    assert views[OTHER]["sync"] == "Invalid" and "colour" in views[OTHER]["message"]
    # status of one site.
    rc, out, _ = world.cli("status", "--json", DOMAIN)
    assert rc == 0 and [v["domain"] for v in json.loads(out)] == [DOMAIN]
    # Nothing was deployed by looking.
    assert _tree(world.base) == []


def test_history_exit_codes(world: World) -> None:
    world.declare()
    rc, out, err = world.cli("history", "nope.example.com")
    assert rc == 1, (out, err)
    # Declared but never reconciled: known, just empty.
    rc, out, err = world.cli("history", DOMAIN, "--json")
    assert rc == 0 and json.loads(out) == [], (out, err)
    world.ok("reconcile")
    (row,) = world.history()
    assert row["status"] == "success" and row["is_active"]


# --- logs ---------------------------------------------------------------------------------------------


def test_logs_exit_codes_and_ids(world: World) -> None:
    world.declare(script="echo first-build\n")
    world.declare(OTHER, script="echo other-build\n")
    rc, out, err = world.cli("logs", DOMAIN)
    assert rc == 1, (out, err)

    world.ok("reconcile")
    out = world.ok("logs", DOMAIN)
    assert "first-build" in out.splitlines(), out
    assert "other-build" not in out

    world.declare(script="echo second-build\n")  # a changed script deploys again
    world.ok("reconcile")
    history = world.history()
    assert len(history) == 2
    newest, oldest = history[0]["id"], history[1]["id"]

    out = world.ok("logs", DOMAIN)
    assert "second-build" in out.splitlines() and "first-build" not in out, out
    out = world.ok("logs", DOMAIN, str(oldest))
    assert "first-build" in out.splitlines() and "second-build" not in out, out
    out = world.ok("logs", DOMAIN, str(newest))
    assert "second-build" in out.splitlines(), out

    # An id of another site's deployment, or no such id at all.
    rc, out, err = world.cli("logs", OTHER, str(oldest))
    assert rc == 1 and "first-build" not in out, (out, err)
    rc, out, err = world.cli("logs", DOMAIN, "99999")
    assert rc == 1, (out, err)
    rc, out, err = world.cli("logs", "nope.example.com")
    assert rc == 1, (out, err)


def test_logs_of_a_failed_deployment(world: World) -> None:
    world.declare(script="echo before-failure\nfalse\necho never-printed\n")
    rc, _, _ = world.cli("reconcile")
    assert rc == 1
    out = world.ok("logs", DOMAIN)
    assert "before-failure" in out.splitlines() and "never-printed" not in out.splitlines(), out


def test_logs_survive_pruning_of_the_release(world: World) -> None:
    commits = world.deploy_n(4, keep=1)
    history = world.history()
    assert len(history) == 4
    first = history[-1]
    assert first["commit_sha"] == commits[0]
    assert first["deployment_path"] is None, "keep = 1 must have pruned the first release"
    assert first["release"] not in world.releases()
    out = world.ok("logs", DOMAIN, str(first["id"]))
    assert f"built {commits[0]}" in out.splitlines(), out
    out = world.ok("logs", DOMAIN)
    assert f"built {commits[-1]}" in out.splitlines(), out


def test_logs_after_the_state_database_was_deleted_reads_the_server(world: World) -> None:
    (commit,) = world.deploy_n(1)
    shutil.rmtree(world.state)
    world.ok("reconcile")  # rebuilds the database from the server, deploys nothing
    assert len(world.releases()) == 1
    out = world.ok("logs", DOMAIN)
    assert f"built {commit}" in out.splitlines(), out


# --- rollback / unpin ---------------------------------------------------------------------------------


def test_rollback_without_an_older_release_exits_1_and_commits_nothing(world: World) -> None:
    world.deploy_n(1)
    tip = world.tip()
    rc, out, err = world.cli("rollback", DOMAIN)
    assert rc == 1, (out, err)
    assert world.tip() == tip
    assert "pin" not in tomllib.loads(world.committed())
    # Never reconciled at all: no candidate either.
    world.declare(OTHER)
    tip = world.tip()
    rc, out, err = world.cli("rollback", OTHER)
    assert rc == 1, (out, err)
    assert world.tip() == tip


@pytest.mark.parametrize("release", ["NOT-A-RELEASE", "31022025-120000", "01012020-000000"])
def test_rollback_to_a_release_that_is_not_a_candidate_exits_1(world: World, release: str) -> None:
    world.deploy_n(2)
    tip = world.tip()
    rc, out, err = world.cli("rollback", DOMAIN, release)
    assert rc == 1, (out, err)
    assert world.tip() == tip
    assert "pin" not in tomllib.loads(world.committed())


COMMENTED = """\
# shop: the main storefront -- keep this comment
server = "local"
base_path = "{base}"
repository = "{app}"   # the app repository
script = '''
echo "built $(git rev-parse HEAD)"
'''
"""


def test_rollback_commits_a_pin_and_keeps_comments(world: World) -> None:
    write_site(world.decl, DOMAIN, raw=COMMENTED.format(base=world.base, app=world.app))
    world.ok("reconcile")
    app_commit(world.app, "v2")
    world.ok("reconcile")
    old, new = world.releases()
    assert world.active() == new
    before = world.tip()

    rc, out, err = world.cli("rollback", DOMAIN)
    assert rc == 0, (out, err)
    assert git(world.decl, "rev-parse", "refs/heads/main^") == before, "exactly one commit on the branch"
    message = git(world.decl, "log", "-1", "--format=%B", "main")
    assert DOMAIN in message and old in message, message
    text = world.committed()
    assert tomllib.loads(text)["pin"] == old
    assert "# shop: the main storefront -- keep this comment" in text
    assert "# the app repository" in text
    # Only the pin changed.
    original = tomllib.loads(COMMENTED.format(base=world.base, app=world.app))
    assert tomllib.loads(text) == {**original, "pin": old}
    # The commit touches only that file.
    changed = git(world.decl, "diff", "--name-only", "main^", "main").splitlines()
    assert changed == [f"sites.d/{DOMAIN}.toml"]

    # A non-bare checkout: the work tree follows and stays clean.
    work_file = world.decl / "sites.d" / f"{DOMAIN}.toml"
    assert work_file.read_text().rstrip("\n") == text
    assert git(world.decl, "status", "--porcelain") == ""

    # The next pass activates it without a rebuild.
    world.ok("reconcile")
    assert world.active() == old
    assert world.releases() == [old, new]


def test_rollback_to_a_named_release(world: World) -> None:
    world.deploy_n(3)
    first, _, third = world.releases()
    world.ok("rollback", DOMAIN, first)
    assert tomllib.loads(world.committed())["pin"] == first
    world.ok("reconcile")
    assert world.active() == first
    assert len(world.releases()) == 3 and world.releases()[-1] == third


def test_rollback_and_unpin_in_a_bare_declarations_repo(world: World) -> None:
    world.declare(script="echo ok\n")
    bare = world.tmp / "decl.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(world.decl), str(bare)], check=True)
    world.ok("reconcile", repo=bare)
    app_commit(world.app, "v2")
    world.ok("reconcile", repo=bare)
    old, new = world.releases()
    tip = world.tip(bare)

    rc, out, err = world.cli("rollback", DOMAIN, repo=bare)
    assert rc == 0, (out, err)
    assert git(bare, "rev-parse", "main^") == tip
    assert tomllib.loads(world.committed(repo=bare))["pin"] == old
    world.ok("reconcile", repo=bare)
    assert world.active() == old

    rc, out, err = world.cli("unpin", DOMAIN, repo=bare)
    assert rc == 0, (out, err)
    assert "pin" not in tomllib.loads(world.committed(repo=bare))
    world.ok("reconcile", repo=bare)
    assert world.active() == new
    assert world.releases() == [old, new]


def test_unpin_removes_the_pin_and_fails_when_unpinned(world: World) -> None:
    world.deploy_n(2)
    old, _ = world.releases()
    world.ok("rollback", DOMAIN)
    assert tomllib.loads(world.committed())["pin"] == old
    tip = world.tip()

    rc, out, err = world.cli("unpin", DOMAIN)
    assert rc == 0, (out, err)
    assert git(world.decl, "rev-parse", "main^") == tip
    assert "pin" not in tomllib.loads(world.committed())
    assert git(world.decl, "status", "--porcelain") == ""

    tip = world.tip()
    rc, out, err = world.cli("unpin", DOMAIN)
    assert rc == 1, (out, err)
    assert world.tip() == tip
    rc, out, err = world.cli("unpin", "nope.example.com")
    assert rc == 1, (out, err)
    assert world.tip() == tip


# --- validate -----------------------------------------------------------------------------------------


def test_validate_a_valid_directory(world: World) -> None:
    world.declare()
    world.declare(OTHER, keep=3, php="8.3")
    rc, out, err = world.cli("validate", str(world.decl))
    assert rc == 0, (out, err)
    rc, out, err = world.cli("validate", str(world.decl / "sites.d"))
    assert rc == 0, (out, err)
    assert _tree(world.base) == []


def test_validate_an_invalid_directory_prints_file_line_key_message(world: World) -> None:
    world.declare()
    (world.decl / "sites.d" / f"{OTHER}.toml").write_text(
        f'server = "local"\nrepository = "{world.app}"\ncolour = "blue"\nkeep = 0\n'
    )
    # Uncommitted: validate checks the files of a directory (a pre-commit check).
    rc, out, err = world.cli("validate", str(world.decl))
    assert rc == 1, (out, err)
    lines = out.splitlines()
    assert any(re.fullmatch(rf"sites\.d/{re.escape(OTHER)}\.toml:3: colour: .+", line) for line in lines), out
    assert any(re.fullmatch(rf"sites\.d/{re.escape(OTHER)}\.toml:4: keep: .+", line) for line in lines), out
    assert DOMAIN not in out.replace("1 valid", "")
    assert _tree(world.base) == []


def test_validate_a_bare_repo_checks_the_committed_tip(world: World) -> None:
    world.declare()
    bare = world.tmp / "decl.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(world.decl), str(bare)], check=True)
    rc, out, err = world.cli("validate", str(bare))
    assert rc == 0, (out, err)

    # Commit an invalid declaration and push it: now the tip is invalid.
    world.declare(OTHER, keep=0)
    git(world.decl, "push", "-q", str(bare), "main")
    rc, out, err = world.cli("validate", str(bare))
    assert rc == 1, (out, err)
    assert re.search(rf"^sites\.d/{re.escape(OTHER)}\.toml:\d+: keep: .+$", out, re.MULTILINE), out

    # Without PATH: the configured repo (bare) at its tip.
    rc, out, err = world.cli("validate", repo=bare)
    assert rc == 1, (out, err)


# --- reconcile --dry-run / --site ---------------------------------------------------------------------


def test_dry_run_prints_the_plan_and_changes_nothing(world: World) -> None:
    world.declare()
    rc, out, err = world.cli("reconcile", "--dry-run")
    assert rc == 1, (out, err)
    assert DOMAIN in out
    assert re.search(r"would .*provision", out), out
    assert re.search(r"would .*deploy", out), out
    assert _tree(world.base) == [], "a dry run must not create anything on the server"
    assert _deployment_rows(world.state) == 0
    rc, out, err = world.cli("history", DOMAIN, "--json")
    assert rc == 0 and json.loads(out) == []

    # Deployed: nothing to do, exit 0, nothing planned.
    world.ok("reconcile")
    (release,) = world.releases()
    rc, out, err = world.cli("reconcile", "--dry-run")
    assert rc == 0, (out, err)
    assert "would" not in out

    # A new commit: the plan says deploy, nothing happens.
    app_commit(world.app, "v2")
    before = _tree(world.base)
    rows = _deployment_rows(world.state)
    rc, out, err = world.cli("reconcile", "--dry-run")
    assert rc == 1, (out, err)
    assert re.search(r"would .*deploy", out), out
    assert _tree(world.base) == before
    assert _deployment_rows(world.state) == rows
    assert world.releases() == [release] and world.active() == release


def test_dry_run_does_not_record_status(world: World) -> None:
    world.declare()
    world.cli("reconcile", "--dry-run")
    assert world.status()[DOMAIN]["sync"] == "Unknown"


def test_reconcile_site_touches_only_that_site(world: World) -> None:
    world.declare()
    world.declare(OTHER)
    rc, out, err = world.cli("reconcile", "--site", DOMAIN)
    assert rc == 0, (out, err)
    assert DOMAIN in out and OTHER not in out
    assert len(world.releases()) == 1
    assert not world.deployments(OTHER).exists() and not (world.base / OTHER).exists()
    views = world.status()
    assert views[DOMAIN]["sync"] == "Synced"
    assert views[OTHER]["sync"] == "Unknown"
    # An undeclared site is not Synced.
    rc, out, err = world.cli("reconcile", "--site", "nope.example.com")
    assert rc == 1, (out, err)
    assert not world.deployments(OTHER).exists()


# --- prune --------------------------------------------------------------------------------------------


def test_prune_dry_run_lists_and_removes_nothing(world: World) -> None:
    world.deploy_n(3)
    releases = world.releases()
    rc, out, err = world.cli("prune", "--keep", "1", "--dry-run")
    assert rc == 0, (out, err)
    assert releases[0] in out and releases[1] in out, out
    assert world.releases() == releases
    assert all(h["deployment_path"] is not None for h in world.history())


def test_prune_keep_1_keeps_only_the_active_release(world: World) -> None:
    commits = world.deploy_n(3)
    first, second, third = world.releases()
    assert world.active() == third
    rc, out, err = world.cli("prune", "--keep", "1")
    assert rc == 0, (out, err)
    assert world.releases() == [third]
    assert world.active() == third
    history = {h["release"]: h for h in world.history()}
    assert history[first]["deployment_path"] is None and history[second]["deployment_path"] is None
    assert history[third]["deployment_path"] == str(world.deployments() / third)
    assert not history[first]["can_rollback"] and not history[second]["can_rollback"]
    assert [h["commit_sha"] for h in world.history()] == commits[::-1], "pruned deployments stay in history"


def test_prune_keep_1_spares_the_pinned_release(world: World) -> None:
    world.deploy_n(3)
    first, _second, third = world.releases()
    world.ok("rollback", DOMAIN, first)  # committed, not applied yet
    rc, out, err = world.cli("prune", "--keep", "1")
    assert rc == 0, (out, err)
    assert world.releases() == [first, third]
    world.ok("reconcile")
    assert world.active() == first


def test_prune_site_touches_only_that_site(world: World) -> None:
    world.deploy_n(2)
    world.deploy_n(2, OTHER)
    others = world.releases(OTHER)
    assert len(others) >= 2
    world.ok("prune", "--keep", "1", "--site", DOMAIN)
    assert len(world.releases()) == 1
    assert world.releases(OTHER) == others


# --- configuration ------------------------------------------------------------------------------------


def test_config_file_values_are_used(world: World) -> None:
    world.declare()
    state = world.tmp / "from-config"
    config = write_config(world.tmp / "conf" / "reconciler.toml", repo=world.decl, state=state)
    rc, out, err = world.run("--config", str(config), "reconcile")
    assert rc == 0, (out, err)
    assert (state / "reconciler.db").is_file()
    assert len(world.releases()) == 1
    assert not (Path.cwd() / "state").exists()


def test_flags_override_the_config_file(world: World) -> None:
    world.declare()
    in_file = world.tmp / "state-in-file"
    on_flag = world.tmp / "state-on-flag"
    config = write_config(world.tmp / "conf" / "reconciler.toml", repo=world.tmp / "wrong-repo", state=in_file)
    rc, out, err = world.run(
        "--config", str(config), "--repo", str(world.decl), "--state-dir", str(on_flag), "reconcile"
    )
    assert rc == 0, (out, err)
    assert (on_flag / "reconciler.db").is_file()
    assert not in_file.exists()


def test_reconciler_config_env_is_used_when_no_config_flag(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.declare()
    state = world.tmp / "env-state"
    config = write_config(world.tmp / "env" / "reconciler.toml", repo=world.decl, state=state)
    monkeypatch.setenv("RECONCILER_CONFIG", str(config))
    rc, out, err = world.run("reconcile")
    assert rc == 0, (out, err)
    assert (state / "reconciler.db").is_file()
    assert len(world.releases()) == 1

    # --config beats $RECONCILER_CONFIG.
    other_state = world.tmp / "flag-state"
    flag_config = write_config(world.tmp / "flag" / "reconciler.toml", repo=world.decl, state=other_state)
    rc, out, err = world.run("--config", str(flag_config), "status")
    assert rc == 0, (out, err)
    # status only looks (it creates no state): it says which config and state it used.
    assert f"no state database at {other_state / 'reconciler.db'} (config {flag_config})" in err, err
    assert not other_state.exists()

    # A bad config named by the environment is a bad config.
    write_config(config, concurrency=0)
    rc, out, err = world.run("reconcile")
    assert rc == 2, (out, err)


def test_relative_paths_in_a_config_file_resolve_against_its_directory(world: World) -> None:
    world.declare()
    conf_dir = world.tmp / "etc" / "reconciler"
    config = write_config(conf_dir / "reconciler.toml", repo="../../decl", state="var/state")
    elsewhere = world.tmp / "elsewhere"
    elsewhere.mkdir()
    os.chdir(elsewhere)  # the fixture's monkeypatch.chdir restores the cwd
    rc, out, err = world.run("--config", str(config), "reconcile")
    assert rc == 0, (out, err)
    assert (conf_dir / "var" / "state" / "reconciler.db").is_file()
    assert not (elsewhere / "var").exists()
    assert len(world.releases()) == 1


def test_reconciler_toml_in_the_current_directory_is_used(world: World) -> None:
    world.declare()
    here = world.tmp / "here"
    write_config(here / "reconciler.toml", repo=world.decl, state="st")
    os.chdir(here)
    rc, out, err = world.run("reconcile")
    assert rc == 0, (out, err)
    assert (here / "st" / "reconciler.db").is_file()


def test_defaults_repo_is_cwd_and_state_is_dot_state(world: World) -> None:
    world.declare()
    os.chdir(world.decl)
    rc, out, err = world.run("reconcile")
    # No configuration: a local site is refused (allow_local defaults to false), reported, untouched.
    assert rc == 1, (out, err)
    assert f"{DOMAIN}: Invalid/Unknown" in out and "allow_local = true" in out, out
    assert (world.decl / "state" / "reconciler.db").is_file()
    assert world.releases() == []
    (world.tmp / "cwd" / "reconciler.toml").unlink(missing_ok=True)
    write_config(world.decl / "reconciler.toml", interval=None)  # ./reconciler.toml: allow_local = true
    rc, out, err = world.run("reconcile")
    assert rc == 0, (out, err)
    assert (world.decl / "state" / "reconciler.db").is_file()
    assert len(world.releases()) == 1
