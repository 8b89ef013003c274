"""What the look-only commands read (cli.look): the state database through plain sqlite3 when
there is one, an empty scratch database (and nothing created) when there is none; a site a
command names is known when it is recorded or declared, else "unknown site" on stderr; and
declarations that cannot be read leave the state database alone to show. Real git, SQLite."""

from __future__ import annotations

import pytest

from reconciler.cli.invocation import Invocation
from reconciler.cli.look import declared, open_site_state, open_state
from reconciler.engine.state_reader import StateReader
from reconciler.engine.store import Store
from tests.support import remove_site
from tests.support.cli_world import DOMAIN, OTHER, CliWorld


def _invocation(world: CliWorld, **overrides: str) -> Invocation:
    world.flags()  # writes the opt-in config
    values = {"repo": str(world.decl), "state_dir": str(world.state), "shard": None, **overrides}
    return Invocation(str(world.tmp / "allow-local.toml"), values)


def test_an_existing_database_is_read_through_plain_sqlite3(world: CliWorld) -> None:
    world.declare(script="echo built\n")
    world.ok("reconcile")
    invocation = _invocation(world)
    store = open_state(invocation, invocation.looks())
    try:
        assert isinstance(store, StateReader)
        assert store.site(DOMAIN) is not None
    finally:
        store.close()


def test_no_database_is_an_empty_scratch_store_and_none_is_created(world: CliWorld,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    invocation = _invocation(world)
    store = open_state(invocation, invocation.looks())
    try:
        assert isinstance(store, Store) and store.site(DOMAIN) is None
    finally:
        store.close()
    assert not world.state.exists()
    assert "no state database" in capsys.readouterr().err


def test_a_site_is_known_when_declared_or_recorded(world: CliWorld, capsys: pytest.CaptureFixture[str]) -> None:
    world.declare(script="echo built\n")
    world.declare(OTHER)
    world.ok("reconcile", "--site", DOMAIN)
    remove_site(world.decl, DOMAIN)  # recorded, no longer declared: its history is still there to see
    for domain in (DOMAIN, OTHER):
        store = open_site_state(_invocation(world), domain)
        assert store is not None, domain
        store.close()
    capsys.readouterr()
    assert open_site_state(_invocation(world), "nope.example.com") is None
    assert capsys.readouterr().err == "reconciler: nope.example.com: unknown site\n"


def test_unreadable_declarations_are_none_with_a_warning(world: CliWorld, capsys: pytest.CaptureFixture[str]) -> None:
    invocation = _invocation(world, repo=str(world.tmp / "no-such-repo"))
    assert declared(invocation, invocation.looks()) is None
    assert "showing the state database only" in capsys.readouterr().err


def test_declared_sites_are_what_the_branch_tip_declares(world: CliWorld) -> None:
    world.declare()
    world.declare(OTHER, colour="blue")
    invocation = _invocation(world)
    sites = declared(invocation, invocation.looks())
    assert sites is not None and sorted(sites) == sorted([DOMAIN, OTHER])
