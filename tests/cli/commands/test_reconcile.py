"""`reconciler reconcile [--site D] [--dry-run]`: one pass now. Exit 0 when every site is
Synced, 1 when one failed or is invalid (the others still converge); --dry-run prints the plan
and changes nothing on the server or in the state database; --site touches only that site.
Sites use `server = "local"` with a base path under tmp_path."""

from __future__ import annotations

import json
import re

import pytest

from tests.support import app_commit
from tests.support.cli_world import DOMAIN, OTHER, CliWorld, deployment_rows, tree


def test_reconcile_exits_0_when_all_synced(world: CliWorld) -> None:
    world.declare(script="echo hello\n")
    world.declare(OTHER)
    rc, out, err = world.cli("reconcile")
    assert rc == 0, (out, err)
    assert f"{DOMAIN}: Synced/Healthy" in out and f"{OTHER}: Synced/Healthy" in out
    assert len(world.releases()) == 1 and len(world.releases(OTHER)) == 1
    # Nothing to do is still all Synced.
    rc, out, err = world.cli("reconcile")
    assert rc == 0, (out, err)


def test_reconcile_exits_1_when_a_script_fails(world: CliWorld) -> None:
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


def test_reconcile_exits_1_when_a_declaration_is_invalid(world: CliWorld) -> None:
    world.declare(OTHER, colour="blue")
    world.declare()
    rc, out, err = world.cli("reconcile")
    assert rc == 1, (out, err)
    assert f"{OTHER}: Invalid" in out
    assert f"{DOMAIN}: Synced/Healthy" in out, "a valid site keeps reconciling beside an invalid one"
    assert len(world.releases()) == 1
    assert not world.deployments(OTHER).exists()


@pytest.mark.parametrize("server", ["a..b", "a" * 64, "127.0.0.1:99999"])
def test_reconcile_reports_a_server_the_transport_cannot_use_as_invalid(world: CliWorld, server: str) -> None:
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


def test_dry_run_prints_the_plan_and_changes_nothing(world: CliWorld) -> None:
    world.declare()
    rc, out, err = world.cli("reconcile", "--dry-run")
    assert rc == 1, (out, err)
    assert DOMAIN in out
    assert re.search(r"would .*provision", out), out
    assert re.search(r"would .*deploy", out), out
    assert tree(world.base) == [], "a dry run must not create anything on the server"
    assert deployment_rows(world.state) == 0
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
    before = tree(world.base)
    rows = deployment_rows(world.state)
    rc, out, err = world.cli("reconcile", "--dry-run")
    assert rc == 1, (out, err)
    assert re.search(r"would .*deploy", out), out
    assert tree(world.base) == before
    assert deployment_rows(world.state) == rows
    assert world.releases() == [release] and world.active() == release


def test_dry_run_does_not_record_status(world: CliWorld) -> None:
    world.declare()
    world.cli("reconcile", "--dry-run")
    assert world.status()[DOMAIN]["sync"] == "Unknown"


def test_reconcile_site_touches_only_that_site(world: CliWorld) -> None:
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
