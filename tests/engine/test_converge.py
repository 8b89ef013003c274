"""The reconciler as the CLI and the daemon use it (engine/converge.py): one object over the
engine's parts. Its limit is shared by server within an SSH server's session cap and takes a new
concurrency in place; a pass through it converges the declared sites with its own store and pool,
and closing it closes the pool. Real git repositories and state database; recording servers
(tests/support/engine_rig.py) for the pass."""

from __future__ import annotations

import asyncio
from pathlib import Path

from reconciler.core.declarations import SiteDeclaration
from reconciler.core.status import Sync
from reconciler.engine.converge import Reconciler, group_key
from reconciler.engine.store import Store
from reconciler.remote.transport.ssh import MAX_SESSIONS
from tests.support import settings_for, write_site
from tests.support.engine_rig import DOMAIN, engine_rig
from tests.support.repos import site_declaration


def test_the_reconciler_shares_its_limit_by_server_within_the_ssh_session_cap(tmp_path: Path) -> None:
    """Keys: a site's server, a many-server site's set of servers. Caps: an SSH server's session
    cap (so a slot never waits for a session), none for this host; SIGHUP's new concurrency
    reaches the limiter in place (slots held stay counted)."""
    settings = settings_for(tmp_path / "decl", tmp_path / "state", concurrency=3)
    reconciler = Reconciler(settings, Store(settings.db_path))
    try:
        limiter = reconciler._limit
        assert group_key(site_declaration(server="web-1")) == "web-1"
        many = SiteDeclaration.model_validate({"domain": "shop.example.com", "servers": ["web-2", "deploy@web-1:2222"],
                                               "repository": "git@github.com:acme/shop.git"})
        assert group_key(many) == ("deploy@web-1:2222", "web-2")
        assert limiter.cap("web-1") == MAX_SESSIONS
        assert limiter.cap(("local", "web-1")) == MAX_SESSIONS
        assert limiter.cap("local") is None
        assert limiter.concurrency == 3
        reconciler.reconfigure(settings.model_copy(update={"concurrency": 5}))
        assert reconciler._limit is limiter and limiter.concurrency == 5
    finally:
        reconciler.store.close()


def test_a_pass_through_the_reconciler_uses_its_store_and_pool_and_close_closes_the_pool(tmp_path: Path) -> None:
    with engine_rig(tmp_path) as rig:
        write_site(rig.decl, DOMAIN, server="web-1", base_path=str(rig.base), repository=str(rig.app))
        reconciler = Reconciler(rig.bench.settings, rig.store, rig.pool)  # type: ignore[arg-type]

        async def go() -> list[Sync]:
            try:
                return [o.sync for o in await reconciler.run_pass()]
            finally:
                await reconciler.close()

        assert asyncio.run(go()) == [Sync.SYNCED]
        assert rig.live("web-1") is not None and len(rig.on("web-1").sent) > 1
        site = rig.store.site(DOMAIN)
        assert site is not None and site["sync"] == Sync.SYNCED
        assert rig.pool.closed == ["closed"]
        assert reconciler.notice == "" and reconciler.skipped == {}
