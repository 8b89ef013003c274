"""A release name planted on the server that leaves no later name stops only its own site.

New releases are named after every existing one, so the newest is always the newest
(core/layout.py `next_release_name`). A directory named `31129999-235959`, the last time a
ddMMYYYY-HHMMSS name can hold, leaves no later name. Before the fix computing one raised
OverflowError: the site went `Unknown (unexpected error: OverflowError ...)` and a traceback was
printed. Now only that site is affected, with a message that says which directory is in the way
and what to do; the live release stays, the other sites deploy, and no traceback is printed.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support import World, app_commit

PLANTED = "31129999-235959"
HIT = "planted.example.com"
OTHER = "other.example.com"


def test_a_planted_last_release_name_stops_only_its_site_with_a_clear_message(tmp_path: Path) -> None:
    world = World.create(tmp_path)
    world.declare(HIT)
    world.declare(OTHER)
    first = world.run_cli_process("reconcile")
    assert first.returncode == 0, first.stdout + first.stderr
    live = world.active(HIT)
    assert live is not None

    (world.deployments(HIT) / PLANTED).mkdir()   # what someone with the deploy user's access can do
    app_commit(world.app, "v2")                   # both sites now need a new release
    head = world.head()

    for command in ("diff", "reconcile"):
        done = world.run_cli_process(command)
        assert "Traceback" not in done.stdout + done.stderr, (command, done.stderr)
        assert "OverflowError" not in done.stdout + done.stderr, (command, done.stdout)
        # reconcile: "D: Failed/Health - why"; diff: "D (server): Failed - why"
        lines = {line.split(" ", 1)[0].rstrip(":"): line for line in done.stdout.splitlines() if ": " in line}
        assert ": Failed" in lines[HIT], (command, done.stdout)
        assert f"release {PLANTED} is named with the last time a release name can hold" in lines[HIT], done.stdout
        assert "remove that directory" in lines[HIT], done.stdout
    assert done.returncode == 1, done.stdout + done.stderr
    assert world.active(HIT) == live, "the live release stays"
    assert world.on_disk(OTHER).live_commit() == head, "the other site of the same pass deploys"

    status = world.run_cli_process("status", "--json")
    views = {view["domain"]: view for view in json.loads(status.stdout)}
    assert views[HIT]["sync"] == "Failed" and PLANTED in views[HIT]["message"], views[HIT]
    assert views[HIT]["active_release"] == live
    assert views[OTHER]["sync"] == "Synced", views[OTHER]

    # The message is true: without the directory the site deploys again.
    (world.deployments(HIT) / PLANTED).rmdir()
    done = world.run_cli_process("reconcile")
    assert done.returncode == 0, done.stdout + done.stderr
    assert world.on_disk(HIT).live_commit() == head
