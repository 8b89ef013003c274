"""Exit codes and messages a cron job or a CI check can rely on (issue 11 items 5 and 6).

An unknown site is an error for every command that names one; `status --exit-code` and `diff`
let monitoring see a Failed, Invalid or Degraded site; and a command that only looks never
creates a state database, but says which config and state dir it used and how to reach the
service's. Sites on "local", the CLI in this process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import World, cli_in_process, neutral_world

DOMAIN = "shop.example.com"
NOPE = "nope.example.com"


@pytest.fixture(name="world")
def world_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    world = neutral_world(tmp_path, monkeypatch)
    world.declare(script="echo built\n")
    rc, out, err = world.run_cli("reconcile")
    assert rc == 0, (out, err)
    return world


@pytest.mark.parametrize("command", [
    ("status", NOPE), ("status", "--json", NOPE), ("history", NOPE), ("logs", NOPE), ("prune", "--site", NOPE),
    ("diff", "--site", NOPE), ("reconcile", "--site", NOPE), ("rollback", NOPE), ("unpin", NOPE), ("nginx", NOPE),
])
def test_an_unknown_site_is_an_error_for_every_command(world: World, command: tuple[str, ...]) -> None:
    rc, out, err = world.run_cli(*command)
    assert rc == 1, (command, out, err)
    assert NOPE in err and ("unknown site" in err or "no such" in err), (command, err)


def test_status_exit_code_and_diff_let_monitoring_see_a_failed_site(world: World) -> None:
    assert world.run_cli("status", "--exit-code").rc == 0
    assert world.run_cli("diff").rc == 0
    world.declare(script="echo about to fail\nexit 7\n")
    assert world.run_cli("reconcile").rc == 1
    views = json.loads(world.run_cli("status", "--json").out)
    assert views[0]["sync"] == "Failed"
    # Plain status keeps SPEC's exit 0; --exit-code is for monitoring.
    assert world.run_cli("status").rc == 0
    assert world.run_cli("status", "--exit-code").rc == 3
    assert world.run_cli("status", "--exit-code", "--json", DOMAIN).rc == 3
    rc, out, err = world.run_cli("diff")
    assert rc == 1 and "Failed" in out, (out, err)


def test_looking_never_creates_a_state_dir_and_says_what_it_used(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    world = neutral_world(tmp_path, monkeypatch)
    world.declare()
    cwd = Path.cwd()
    for command in (["status"], ["status", "--json"], ["history", DOMAIN], ["diff"], ["logs", DOMAIN]):
        err = cli_in_process(["--repo", str(world.decl), *command]).err
        assert not (cwd / "state").exists(), f"{command} created ./state"
        assert "no state database at state/reconciler.db" in err and "no config file" in err, (command, err)
        assert "--config" in err
