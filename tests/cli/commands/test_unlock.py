"""`reconciler unlock D`: removes a site's lock on its server whoever holds it and names the
holder; an unlocked site says so; an unknown or invalid site is exit 1. Here on the local
transport (the sshd case is tests/remote/test_lock.py's): a real lock taken by `lock.held`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from reconciler.core.layout import SitePaths
from reconciler.remote import lock
from reconciler.remote.transport.local import LocalTransport
from tests.support import CliRun
from tests.support.cli_world import DOMAIN, OTHER, CliWorld

HOLDER = lock.Identity("instance-ops", "run-ops", "ops-host.example.net", 4242)


def test_unlock_removes_a_held_lock_and_names_its_holder(world: CliWorld) -> None:
    world.declare(script="echo built\n")
    world.ok("reconcile")
    paths = SitePaths(str(world.base), DOMAIN)

    async def hold_and_unlock() -> CliRun:
        transport = LocalTransport()
        try:
            async with lock.held(transport, paths, HOLDER, "deploy 01012026-000000", stale_after=300, timeout=30):
                assert Path(paths.lock).exists()
                result = await asyncio.to_thread(world.cli, "unlock", DOMAIN)
                assert not Path(paths.lock).exists(), "unlock left the lock in place"
                return result
        finally:
            await transport.close()

    rc, out, err = asyncio.run(hold_and_unlock())
    assert rc == 0, (out, err)
    assert out.startswith(f"{DOMAIN}: lock removed (was held by ") and "ops-host.example.net" in out, out
    assert world.ok("unlock", DOMAIN) == f"{DOMAIN}: was not locked\n"


def test_an_invalid_or_unknown_site_is_exit_1(world: CliWorld) -> None:
    world.declare()
    world.declare(OTHER, colour="blue")
    for domain in (OTHER, "nope.example.com"):
        rc, out, err = world.cli("unlock", domain)
        assert rc == 1 and out == "", (domain, out, err)
        assert f"{domain}: no such valid site declared" in err
