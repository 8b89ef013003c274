"""A site can keep its secrets out of deploy logs: `trace = false`.

The deploy script runs with `sh -x` by default, so each command lands in deployment.log with
its variables expanded: a script that sources the shared `.env` writes `DB_PASSWORD=...` there,
and the log is readable through `reconciler logs` and the HTTP API. The README says so; here a
real deploy shows both sides: traced by default (the secret is in the log), and with
`trace = false` the script's own output is kept while the expanded secret is not. Against the code
before this change the `trace` key was unknown, so the site was Invalid and nothing deployed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import World, neutral_world

SECRET = "hunter2-from-env"
SCRIPT = '. ./.env\necho "connecting with a password of ${#DB_PASSWORD} characters"\n'


@pytest.fixture(name="world")
def world_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    world = neutral_world(tmp_path, monkeypatch)
    shared = world.deployments() / "shared"
    shared.mkdir(parents=True)
    (shared / ".env").write_text(f"DB_PASSWORD={SECRET}\n")
    return world


def _deploy_log(world: World) -> str:
    rc, out, err = world.run_cli("reconcile")
    assert rc == 0, (out, err)
    rc, out, err = world.run_cli("logs", world.domain)
    assert rc == 0, (out, err)
    return out


def test_the_default_trace_writes_expanded_secrets_into_the_log(world: World) -> None:
    world.declare(script=SCRIPT)
    log = _deploy_log(world)
    assert f"connecting with a password of {len(SECRET)} characters" in log
    assert SECRET in log, "sh -x is expected to trace the sourced assignment (what the README warns of)"


def test_trace_false_keeps_the_output_and_not_the_expanded_secret(world: World) -> None:
    world.declare(script=SCRIPT, trace=False)
    log = _deploy_log(world)
    assert f"connecting with a password of {len(SECRET)} characters" in log
    assert SECRET not in log and "+ " not in log
    on_server = (world.on_disk().link / "deployment.log").read_text()
    assert SECRET not in on_server
