"""`reconciler diff [--site D]` (alias `plan`): what the next pass would do, per site, changing
nothing; exit 1 whenever the fleet is not simply in step (work pending, or a site Failed), so a
cron job or a CI check notices both. Sites use `server = "local"`; the CLI runs in this process."""

from __future__ import annotations

from tests.support import app_commit
from tests.support.cli_world import DOMAIN, OTHER, CliWorld, deployment_rows, tree


def test_diff_shows_the_plan_changes_nothing_and_exits_1_only_when_there_is_work(world: CliWorld) -> None:
    # No php-fpm here: a reload that works, or the reload owed after a switch would be work too.
    world.declare(reload="true")
    rc, out, err = world.cli("diff")
    assert rc == 1, (out, err)
    assert f"{DOMAIN} (local):" in out and "+ deploy" in out and "+ provision" in out
    assert tree(world.base) == [], "diff must not touch the server"
    world.ok("reconcile")
    rc, out, err = world.cli("plan")
    assert rc == 0, (out, err)
    assert "up to date" in out
    app_commit(world.app, "v2")
    rows = deployment_rows(world.state)
    rc, out, err = world.cli("diff")
    assert rc == 1 and "+ deploy" in out, (out, err)
    assert deployment_rows(world.state) == rows, "diff records no deployment"


def test_diff_exits_1_and_says_why_for_a_failed_site(world: CliWorld) -> None:
    world.declare(script="echo built\n")
    world.ok("reconcile")
    assert world.cli("diff").rc == 0
    world.declare(script="echo about to fail\nexit 7\n")
    assert world.cli("reconcile").rc == 1
    rc, out, err = world.cli("diff")
    assert rc == 1 and f"{DOMAIN} (local): Failed - " in out, (out, err)


def test_diff_site_shows_only_that_site(world: CliWorld) -> None:
    world.declare(reload="true")
    world.declare(OTHER, reload="true")
    rc, out, err = world.cli("diff", "--site", OTHER)
    assert rc == 1, (out, err)
    assert f"{OTHER} (local):" in out and DOMAIN not in out


def test_a_failed_sites_message_is_printed_escaped_never_as_terminal_control(world: CliWorld) -> None:
    # The failure message names the failing command as the shell traced it, values expanded: a
    # value (here made by the script; it could come from the app repository) must not drive the
    # operator's terminal through `diff` (an OSC sequence sets the window title).
    world.declare(script="x=$(awk 'BEGIN { printf \"%c]0;owned%c\", 27, 7 }')\nfalse \"$x\"\n")
    assert world.cli("reconcile").rc == 1
    rc, out, err = world.cli("diff")
    assert rc == 1 and f"{DOMAIN} (local): Failed - " in out, (out, err)
    assert "\x1b" not in out and "\x07" not in out, out
    assert "\\x1b]0;owned\\x07" in out, out  # shown, escaped
