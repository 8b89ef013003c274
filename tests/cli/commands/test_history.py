"""`reconciler history D [--json]`: a site's deployments, newest first; an unknown site is an
error, a declared site never reconciled has an empty history."""

from __future__ import annotations

import json

from tests.support.cli_world import DOMAIN, CliWorld


def test_history_exit_codes(world: CliWorld) -> None:
    world.declare()
    rc, out, err = world.cli("history", "nope.example.com")
    assert rc == 1, (out, err)
    # Declared but never reconciled: known, just empty.
    rc, out, err = world.cli("history", DOMAIN, "--json")
    assert rc == 0 and json.loads(out) == [], (out, err)
    world.ok("reconcile")
    (row,) = world.history()
    assert row["status"] == "success" and row["is_active"]


def test_history_prints_a_table_newest_first_with_the_active_release_marked(world: CliWorld) -> None:
    commits = world.deploy_n(2)
    header, *rows = world.ok("history", DOMAIN).splitlines()
    assert header.split()[:4] == ["ID", "RELEASE", "STATUS", "COMMIT"]
    assert [row.split()[3] for row in rows] == [c[:12] for c in reversed(commits)]
    assert rows[0].rstrip().endswith("active") and not rows[1].rstrip().endswith("active")
    assert "\033[" not in header + "".join(rows), "no colour when piped"
