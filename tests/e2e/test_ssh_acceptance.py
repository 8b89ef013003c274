"""Acceptance tests of the core deploy behaviour, over a REAL OpenSSH sshd on 127.0.0.1.

Each test declares sites whose `server` is the sshd destination, runs real passes and the
real CLI, and checks the SPEC (sections 3-6) on the "server" (a tmp dir reached over SSH):
the layout, status/history JSON, rollback/roll-forward, failure memory, pruning, hostile
declarations, rebuilding the database from the servers, and an unreachable server.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.layout import parse_release
from reconciler.engine.converge import SiteOutcome
from tests import support
from tests.support import HISTORY_KEYS, STATUS_KEYS, app_commit, git
from tests.support.sshd import SshServer

DOMAIN = "shop.example.com"
DEFAULT_SHARED = ("storage", ".env", "vendor", "node_modules")  # SPEC 2, the oracle: not imported
SHA_RE = re.compile(r"^[0-9a-f]{40}$")


@dataclass
class Env(support.World):
    """Sites on the sshd 'server'; passes run in this process, the CLI through its entry point."""

    # -- declarations and passes ---------------------------------------------------------------

    def reconcile(self) -> dict[str, SiteOutcome]:
        return self.reconcile_in_process()

    def converge(self, domain: str = DOMAIN) -> SiteOutcome:
        """One pass that must leave `domain` Synced/Healthy."""
        outcome = self.reconcile()[domain]
        assert (outcome.sync, outcome.health) == ("Synced", "Healthy"), outcome
        return outcome

    def committed(self, domain: str = DOMAIN) -> dict[str, Any]:
        """The declaration as committed on the declarations branch."""
        return tomllib.loads(git(self.decl, "show", f"main:sites.d/{domain}.toml"))

    # -- the CLI --------------------------------------------------------------------------------

    def cli(self, *args: str) -> tuple[int, str]:
        rc, out, _ = self.run_cli(*args)
        return rc, out

    def status(self, domain: str = DOMAIN) -> dict[str, Any]:
        rc, out = self.cli("status", "--json")
        assert rc == 0, out
        views = json.loads(out)
        assert isinstance(views, list)
        for view in views:
            assert set(view) == STATUS_KEYS, f"status --json keys differ from SPEC 5: {sorted(view)}"
        found = [v for v in views if v["domain"] == domain]
        assert len(found) == 1, views
        return found[0]

    def history(self, domain: str = DOMAIN) -> list[dict[str, Any]]:
        rc, out = self.cli("history", domain, "--json")
        assert rc == 0, out
        views = json.loads(out)
        assert isinstance(views, list)
        for view in views:
            assert set(view) == HISTORY_KEYS, f"history --json keys differ from SPEC 5: {sorted(view)}"
        times = [parse_release(v["release"]) for v in views]
        assert None not in times, views
        assert times == sorted(times, reverse=True), f"history not newest first: {[v['release'] for v in views]}"
        return views

    # -- the server -----------------------------------------------------------------------------

    def link(self, domain: str = DOMAIN) -> Path:
        return self.on_disk(domain).link

    def active(self, domain: str | None = None) -> str:
        """The release the site symlink points at; the target must be the relative SPEC form."""
        release = super().active(domain)
        assert release is not None, f"{self.link(domain or DOMAIN)} does not exist"
        return release

    def two_releases(self) -> tuple[str, str, str, str]:
        """(first commit, second commit, their releases): the site deployed, then an app commit deployed."""
        self.declare(script="echo ok\n")
        self.converge()
        first = self.head()
        second = app_commit(self.app, "v2")
        self.converge()
        old, new = self.releases()
        return first, second, old, new

    def served(self, domain: str = DOMAIN) -> str:
        return (self.link(domain) / "public" / "index.php").read_text()


@pytest.fixture(name="env")
def env_fixture(tmp_path: Path, sshd_session: SshServer, monkeypatch: pytest.MonkeyPatch) -> Env:
    return _make_env(tmp_path, sshd_session, monkeypatch)


def _make_env(tmp_path: Path, server: SshServer, monkeypatch: pytest.MonkeyPatch) -> Env:
    monkeypatch.delenv("RECONCILER_CONFIG", raising=False)
    return Env.create(tmp_path, server, concurrency=4)


# --- 1. first declaration: provision + deploy ---------------------------------------------------------


def test_first_declaration_provisions_and_deploys_over_ssh(env: Env) -> None:
    env.declare(script='echo built-by-script\necho "release=$RECONCILER_RELEASE"\n')
    rc, out = env.cli("reconcile")
    assert rc == 0, out
    assert f"{DOMAIN}: Synced/Healthy" in out

    releases = env.releases()
    assert len(releases) == 1, releases
    release = releases[0]
    # The site symlink is relative: deployments/{domain}/{release}.
    assert os.readlink(env.link()) == f"deployments/{DOMAIN}/{release}"
    rel = env.deployments() / release
    # Shared entries are relative links into ../shared, one per default `shared` entry.
    for entry in DEFAULT_SHARED:
        assert (rel / entry).is_symlink(), entry
        assert os.readlink(rel / entry) == f"../shared/{entry}", entry
        assert (rel / entry).exists(), f"{entry} link dangles"
    shared = env.deployments() / "shared"
    # The repository ships storage/: it was replaced by the link (no storage/storage) and seeded shared/.
    assert not (shared / "storage" / "storage").exists()
    assert (shared / "storage" / "logs" / ".gitkeep").is_file(), "shared/storage not seeded from the repo"
    assert (shared / ".env").is_file() and (shared / ".env").stat().st_size == 0
    assert (shared / "vendor").is_dir() and (shared / "node_modules").is_dir()
    # A full git work tree at exactly the branch head, whose origin is the real repository.
    assert git(rel, "rev-parse", "HEAD") == env.head()
    assert git(rel, "remote", "get-url", "origin") == str(env.app)
    # The script ran in the release, its output is in deployment.log.
    log = (rel / "deployment.log").read_text()
    assert "built-by-script" in log
    assert f"release={release}" in log
    assert env.served() == "<?php echo 'v1';\n"

    status = env.status()
    assert status == {
        "domain": DOMAIN,
        "server": env.server.destination,
        "sync": "Synced",
        "health": "Healthy",
        "pinned": None,
        "active_release": release,
        "active_commit": env.head(),
        "desired_commit": env.head(),
        "last_deployed_at": status["last_deployed_at"],
        "message": "",
        "observed_at": status["observed_at"],  # beyond SPEC's keys: when the server was last probed
        "servers": [{"server": env.server.destination, "active_release": release, "message": ""}],
        "ref": "branch main",  # and what the site deploys from
        "shard": "1/1", "skipped": False,  # and that this (unsharded) instance owns it
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", status["last_deployed_at"] or ""), status

    # A second pass changes nothing.
    env.converge()
    assert env.releases() == [release]
    assert len(env.history()) == 1


# --- 2. a new app commit goes live -------------------------------------------------------------------


def test_new_app_commit_deploys_a_new_release(env: Env) -> None:
    env.declare(script="echo ok\n")
    env.converge()
    first_commit = env.head()
    (first,) = env.releases()

    second_commit = app_commit(env.app, "v2")
    env.converge()
    releases = env.releases()
    assert len(releases) == 2 and releases[0] == first, releases
    second = releases[1]
    assert env.active() == second
    assert env.served() == "<?php echo 'v2';\n"
    assert git(env.deployments() / second, "rev-parse", "HEAD") == second_commit

    history = env.history()
    assert [h["release"] for h in history] == [second, first]
    assert [h["commit_sha"] for h in history] == [second_commit, first_commit]
    assert [h["status"] for h in history] == ["success", "success"]
    assert [h["is_active"] for h in history] == [True, False]
    assert [h["can_rollback"] for h in history] == [False, True]
    for h, name in zip(history, [second, first], strict=True):
        assert h["branch"] == "main"
        assert h["deployment_path"] == str(env.deployments() / name)
        assert h["log_file_path"] == str(env.deployments() / name / "deployment.log")
        assert isinstance(h["id"], int) and isinstance(h["duration_ms"], int)
        assert h["started_at"] and h["completed_at"]

    status = env.status()
    assert (status["sync"], status["active_release"], status["active_commit"]) == ("Synced", second, second_commit)


# --- 3. rollback and roll-forward: activation only, never a rebuild ------------------------------------


def test_pin_rolls_back_and_unpin_rolls_forward_without_rebuild(env: Env) -> None:
    old_commit, new_commit, old, new = env.two_releases()
    rows = len(env.history())
    assert rows == 2

    # `rollback` commits pin = the newest successful release older than the active one.
    rc, out = env.cli("rollback", DOMAIN)
    assert rc == 0, out
    assert env.committed()["pin"] == old
    env.converge()
    assert env.active() == old
    assert env.served() == "<?php echo 'v1';\n"
    assert env.releases() == [old, new], "rollback must not build a release"
    assert len(env.history()) == rows, "rollback must not record a deployment"
    status = env.status()
    assert (status["pinned"], status["active_release"], status["active_commit"]) == (old, old, old_commit)
    assert status["sync"] == "Synced"
    history = env.history()
    assert [h["is_active"] for h in history] == [False, True]
    assert [h["can_rollback"] for h in history] == [True, False]

    # `unpin` commits the removal: roll forward to the existing newer release.
    rc, out = env.cli("unpin", DOMAIN)
    assert rc == 0, out
    assert "pin" not in env.committed()
    env.converge()
    assert env.active() == new
    assert env.releases() == [old, new], "roll-forward must not build a release"
    assert len(env.history()) == rows
    status = env.status()
    assert (status["pinned"], status["active_release"], status["active_commit"]) == (None, new, new_commit)

    # A pin written by hand in the declaration works the same way, also back and forth.
    env.declare(script="echo ok\n", pin=old)
    env.converge()
    assert env.active() == old
    env.declare(script="echo ok\n")
    env.converge()
    assert env.active() == new
    assert env.releases() == [old, new]
    assert len(env.history()) == rows


def test_pin_to_missing_release_deploys_nothing(env: Env) -> None:
    env.declare(script="echo ok\n")
    env.converge()
    (release,) = env.releases()
    env.declare(script="echo ok\n", pin="01012020-000000")
    outcome = env.reconcile()[DOMAIN]
    assert outcome.health == "Degraded" and outcome.sync != "Synced", outcome
    assert "01012020-000000" in outcome.message
    assert env.releases() == [release] and env.active() == release
    assert len(env.history()) == 1


# --- 4. a failing script --------------------------------------------------------------------------------


def test_failing_script_keeps_old_release_and_is_not_retried(env: Env) -> None:
    env.declare(script="echo ok\n")
    env.converge()
    (good,) = env.releases()

    env.declare(script="echo ok\nfalse\necho never\n")
    outcome = env.reconcile()[DOMAIN]
    assert outcome.sync == "Failed", outcome
    assert "false" in outcome.message and re.search(r"\bexit (status )?1\b", outcome.message), outcome.message
    # The old release is still served; the failed one never went live.
    assert env.active() == good
    assert env.served() == "<?php echo 'v1';\n"
    after_failure = env.releases()
    history = env.history()
    assert len(history) == 2
    assert history[0]["status"] == "failed" and not history[0]["is_active"] and not history[0]["can_rollback"]
    assert history[1]["release"] == good and history[1]["is_active"]
    failed_release = history[0]["release"]
    if failed_release in after_failure:  # kept for inspection: its log holds the output up to the failure
        lines = (env.deployments() / failed_release / "deployment.log").read_text().splitlines()
        assert "ok" in lines and "never" not in lines
        assert env.active() != failed_release
    status = env.status()
    assert status["sync"] == "Failed" and status["active_release"] == good
    assert "false" in status["message"] and "1" in status["message"], status
    rc, out = env.cli("logs", DOMAIN)
    assert rc == 0 and "ok" in out.splitlines(), out

    # The next pass does not rebuild the same (commit, script, shared).
    outcome = env.reconcile()[DOMAIN]
    assert outcome.sync == "Failed" and "false" in outcome.message, outcome
    assert env.releases() == after_failure
    assert len(env.history()) == 2
    assert env.active() == good

    # A new app commit deploys again (the script still fails, so it is a new failed attempt).
    app_commit(env.app, "v2")
    outcome = env.reconcile()[DOMAIN]
    assert outcome.sync == "Failed", outcome
    assert len(env.history()) == 3
    assert env.active() == good
    before = env.releases()

    # A changed declaration (the script fixed) deploys the new commit and it goes live.
    env.declare(script="echo ok\necho fixed\n")
    env.converge()
    assert len(env.history()) == 4
    releases = env.releases()
    assert releases[-1] not in before, "the fixed declaration must build a new release"
    assert env.active() == releases[-1]
    assert git(env.deployments() / releases[-1], "rev-parse", "HEAD") == env.head()
    assert "fixed" in (env.deployments() / releases[-1] / "deployment.log").read_text().splitlines()
    assert env.served() == "<?php echo 'v2';\n"
    assert env.status()["message"] == ""


# --- 5. pruning --------------------------------------------------------------------------------------


def test_keep_prunes_to_14_successful_and_history_remembers(env: Env) -> None:
    env.declare(script="echo ok\n", keep=14)
    commits = []
    for n in range(16):
        if n:
            app_commit(env.app, f"v{n + 1}")
        commits.append(env.head())
        env.converge()
    releases = env.releases()
    assert len(releases) == 14, releases
    assert env.active() == releases[-1]
    assert git(env.deployments() / releases[-1], "rev-parse", "HEAD") == commits[-1]

    history = env.history()
    assert len(history) == 16, "pruned deployments must stay in history"
    assert [h["commit_sha"] for h in history] == commits[::-1]
    assert all(h["status"] == "success" for h in history)
    pruned = [h for h in history if h["deployment_path"] is None]
    assert [h["commit_sha"] for h in pruned] == commits[1::-1], "the two oldest are pruned"
    assert all(not h["can_rollback"] and not h["is_active"] for h in pruned)
    live = {h["release"] for h in history if h["deployment_path"] is not None}
    assert live == set(releases)
    assert [h["is_active"] for h in history] == [True] + [False] * 15
    assert [h["can_rollback"] for h in history] == [False] + [True] * 13 + [False] * 2


def test_pinned_release_is_never_pruned(env: Env) -> None:
    env.declare(script="echo ok\n", keep=3)
    for n in range(3):
        if n:
            app_commit(env.app, f"v{n + 1}")
        env.converge()
    a, b, c = env.releases()

    # A pin committed but not applied yet: `prune --keep 1` must spare it (and the active one).
    env.declare(script="echo ok\n", keep=3, pin=a)
    rc, out = env.cli("prune", "--keep", "1")
    assert rc == 0, out
    assert env.releases() == [a, c], out
    assert env.active() == c

    env.converge()
    assert env.active() == a
    assert env.releases() == [a, c]

    # A new app commit while pinned: still on the pin, nothing built, the pin survives.
    app_commit(env.app, "while-pinned")
    env.converge()
    assert env.active() == a
    assert env.releases() == [a, c]
    assert len(env.history()) == 3

    # keep=1 while pinned: every pass prunes what it may, never the pinned, active release.
    env.declare(script="echo ok\n", keep=1, pin=a)
    env.converge()
    assert a in env.releases()
    assert env.active() == a
    history = {h["release"]: h for h in env.history()}
    assert history[b]["deployment_path"] is None
    assert history[a]["deployment_path"] == str(env.deployments() / a) and history[a]["is_active"]


# --- 6. hostile declarations --------------------------------------------------------------------------


def _canaries(*roots: Path) -> list[Path]:
    """Every file named CANARY under `roots` (recursively) and in the shells' cwd and $HOME."""
    found = [p for p in (Path.home() / "CANARY", Path.cwd() / "CANARY") if p.exists()]
    for root in roots:
        found += list(root.rglob("CANARY"))
    return found


def test_hostile_declarations_are_invalid_and_never_run(env: Env) -> None:
    assert _canaries() == []
    canary = env.tmp / "CANARY"
    server, base, repo = env.server.destination, str(env.base), str(env.app)

    def site(name: str, body: str) -> None:
        (env.decl / "sites.d" / f"{name}.toml").write_text(body)

    common = f'server = "{server}"\nbase_path = "{base}"\n'
    # name -> (file body, expected line, expected key)
    hostile = {
        "branch.example.com": (common + f'repository = "{repo}"\nbranch = "main;touch CANARY"\n', 4, "branch"),
        "upload.example.com": (common + 'repository = "--upload-pack=touch CANARY"\n', 3, "repository"),
        "upload2.example.com": (
            common + f'repository = "{repo}"\nbranch = "--upload-pack=touch${{IFS}}{canary}"\n',
            4,
            "branch",
        ),
        "mismatch.example.com": (common + f'repository = "{repo}"\ndomain = "other.example.com"\n', 4, "domain"),
        "Bad_Domain": (common + f'repository = "{repo}"\n', 1, "domain"),
        "unknown.example.com": (common + f'repository = "{repo}"\ncolour = "blue"\n', 4, "colour"),
        "badpin.example.com": (common + f'repository = "{repo}"\npin = "32132025-999999"\n', 4, "pin"),
    }
    for name, (body, _, _) in hostile.items():
        site(name, body)
    env.declare("good.example.com", script="echo good\n")  # commits everything together

    rc, out = env.cli("validate")
    assert rc == 1, out
    rc, out = env.cli("reconcile")
    assert rc == 1, out
    outcomes = env.reconcile()
    assert outcomes["good.example.com"].sync == "Synced", outcomes["good.example.com"]
    for name, (_, line, key) in hostile.items():
        outcome = outcomes[name]
        assert outcome.sync == "Invalid", outcome
        assert re.search(rf"sites\.d/{re.escape(name)}\.toml:{line}:", outcome.message), outcome.message
        assert key in outcome.message, outcome.message
        status = env.status(name)
        assert status["sync"] == "Invalid" and status["message"] == outcome.message, status

    assert env.status("good.example.com")["sync"] == "Synced"
    assert (env.base / "good.example.com" / "public" / "index.php").is_file()
    # Nothing of any invalid site touched the server.
    assert sorted(p.name for p in (env.base / "deployments").iterdir()) == ["good.example.com"]
    assert sorted(p.name for p in env.base.iterdir()) == ["deployments", "good.example.com"]
    assert _canaries(env.tmp) == []


def test_valid_but_hostile_values_are_quoted_never_code(env: Env) -> None:
    """Values that pass validation yet are full of shell syntax reach the server as data."""
    assert _canaries() == []
    # base_path is a plain path ([A-Za-z0-9._/-]); dashes and dots are what is left.
    weird_base = env.tmp / "-srv--rf" / "..x"
    env.declare("weird.example.com", base_path=str(weird_base), script="echo weird\n")
    env.declare("branchy.example.com", branch="main$(touch${IFS}CANARY)")
    env.declare("repo.example.com", repository=f"{env.app}$(touch${{IFS}}CANARY)")
    outcomes = env.reconcile()
    assert outcomes["weird.example.com"].sync == "Synced", outcomes["weird.example.com"]
    assert (weird_base / "weird.example.com" / "public" / "index.php").is_file()
    # The others name a branch / repository that does not exist: never Synced, never deployed.
    for name in ("branchy.example.com", "repo.example.com"):
        assert outcomes[name].sync not in ("Synced", "Invalid"), outcomes[name]
        assert not (env.base / name).exists()
    assert _canaries(env.tmp) == []


# --- 7. the database is rebuilt from the servers -----------------------------------------------------------


def test_deleted_database_is_rebuilt_from_the_server_without_deploying(env: Env) -> None:
    first_commit, second_commit, old, new = env.two_releases()
    before = env.history()

    shutil.rmtree(env.state)  # reconciler.db, its WAL and the logs dir
    rc, out = env.cli("reconcile")
    assert rc == 0, out
    assert env.releases() == [old, new], "a rebuilt database must not redeploy"
    assert env.active() == new
    status = env.status()
    assert (status["sync"], status["health"]) == ("Synced", "Healthy"), status
    assert (status["active_release"], status["active_commit"]) == (new, second_commit)
    assert status["desired_commit"] == second_commit
    history = env.history()
    assert [h["release"] for h in history] == [h["release"] for h in before] == [new, old]
    assert [h["commit_sha"] for h in history] == [second_commit, first_commit]
    assert [h["status"] for h in history] == ["success", "success"]
    assert [h["is_active"] for h in history] == [True, False]
    assert [h["can_rollback"] for h in history] == [False, True]
    assert [h["deployment_path"] for h in history] == [str(env.deployments() / new), str(env.deployments() / old)]

    # A rollback works from the rebuilt state, and survives another deletion.
    env.declare(script="echo ok\n", pin=old)
    env.converge()
    shutil.rmtree(env.state)
    env.converge()
    assert env.active() == old and env.releases() == [old, new]
    status = env.status()
    assert (status["pinned"], status["active_release"], status["active_commit"]) == (old, old, first_commit)

    # Failure memory lives on the server too: a failed build is not retried after a deletion.
    env.declare(script="echo ok\nfalse\necho never\n")
    assert env.reconcile()[DOMAIN].sync == "Failed"
    assert env.active() == old  # the failed build never went live; the pin was removed meanwhile
    releases, rows = env.releases(), len(env.history())
    shutil.rmtree(env.state)
    outcome = env.reconcile()[DOMAIN]
    assert outcome.sync == "Failed" and "false" in outcome.message, outcome
    assert env.releases() == releases
    assert env.active() == old
    assert len(env.history()) <= rows


# --- 8. an unreachable server ----------------------------------------------------------------------------


def test_unreachable_server_is_unknown_then_converges(
    tmp_path: Path, sshd: SshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _make_env(tmp_path, sshd, monkeypatch)
    env.declare(script="echo ok\n")
    env.converge()
    (release,) = env.releases()
    new_commit = app_commit(env.app, "v2")

    sshd.stop()
    outcome = env.reconcile()[DOMAIN]
    assert outcome.sync == "Unknown", outcome
    assert f"127.0.0.1:{sshd.port}" in outcome.message, outcome.message
    status = env.status()
    assert status["sync"] == "Unknown" and f"127.0.0.1:{sshd.port}" in status["message"], status
    rc, _ = env.cli("reconcile")
    assert rc == 1
    assert env.releases() == [release] and env.active() == release
    assert len(env.history()) == 1

    sshd.start()
    env.converge()
    releases = env.releases()
    assert len(releases) == 2 and env.active() == releases[-1]
    status = env.status()
    assert (status["sync"], status["active_commit"], status["message"]) == ("Synced", new_commit, "")
