"""`reconciler rollback D [RELEASE]`: commits a pin to an older release (default: the one
before the active one), changing only that line of the site's file and keeping its comments; the
command returns with it live (no daemon runs here: it switches itself), without a rebuild, and
exits 1 saying why when it cannot switch now. No candidate, or a release that is not one: exit 1
and nothing committed."""

from __future__ import annotations

import json
import re
import time
import tomllib

import pytest

from tests.support import app_commit, git, write_site
from tests.support.cli_world import DOMAIN, OTHER, CliWorld


def test_rollback_without_an_older_release_exits_1_and_commits_nothing(world: CliWorld) -> None:
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
def test_rollback_to_a_release_that_is_not_a_candidate_exits_1(world: CliWorld, release: str) -> None:
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


def test_rollback_commits_a_pin_and_keeps_comments(world: CliWorld) -> None:
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


def test_rollback_to_a_named_release(world: CliWorld) -> None:
    world.deploy_n(3)
    first, _, third = world.releases()
    world.ok("rollback", DOMAIN, first)
    assert tomllib.loads(world.committed())["pin"] == first
    world.ok("reconcile")
    assert world.active() == first
    assert len(world.releases()) == 3 and world.releases()[-1] == third


def test_rollback_returns_with_the_release_live_and_says_how_long_it_took(world: CliWorld) -> None:
    world.deploy_n(2)
    old, _ = world.releases()
    rc, out, err = world.cli("rollback", DOMAIN)
    assert rc == 0, (out, err)
    assert world.active() == old, "live when the command returns, no pass needed"
    assert re.search(rf"^{re.escape(DOMAIN)}: live: {old} \([0-9.]+ s, applied here\)$", out, re.M), out


def test_a_rollback_that_cannot_switch_now_exits_1_and_says_why(world: CliWorld) -> None:
    world.deploy_n(2)
    _, new = world.releases()
    owner = {"instance": "other", "run": "r", "host": "ci.example.com", "pid": 4242, "purpose": "deploying",
             "since": time.time()}
    lock = world.base / "deployments" / DOMAIN / ".reconciler-lock"
    lock.mkdir()
    (lock / "owner").write_text(json.dumps(owner) + "\n")
    rc, out, err = world.cli("rollback", DOMAIN)
    assert rc == 1, (out, err)
    assert "pin" in tomllib.loads(world.committed()), "the pin is committed: the next pass applies it"
    assert world.active() == new and "ci.example.com" in out, out
