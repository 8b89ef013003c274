"""The workbench (engine/workbench.py): a site's context names its server only when it is not the
site's first, progress is told with the site's domain, the global limit is shared by server (a
many-server site by its set of servers) within the smallest session cap, the site lock is held
on the context's server with the facts read under it, and a server's probe is one command.
Recording servers (tests/support/engine_rig.py), a real state database."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.engine.workbench import Workbench, group_key
from reconciler.errors import SiteLocked
from tests.support import site_declaration
from tests.support.engine_rig import DOMAIN, Rig, engine_rig
from tests.support.recording import RecordingPool


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with engine_rig(tmp_path, ("web-1", "web-2")) as made:
        yield made


def test_a_context_on_the_first_server_has_no_target_and_progress_names_the_site(rig: Rig) -> None:
    told: list[tuple[str, str]] = []
    rig.bench.progress = lambda domain, step: told.append((domain, step))
    site = rig.site()
    first, second = rig.bench.context(site, "c" * 40), rig.bench.context(site, None, "web-2")
    assert (first.target, first.server, first.transport) == ("", "web-1", rig.on("web-1"))
    assert (second.target, second.server, second.transport) == ("web-2", "web-2", rig.on("web-2"))
    assert first.declarations_commit == "c" * 40
    assert rig.bench.context(site, None, "web-1").target == "", "the first server, named, is still the site's own"
    second.step("prune 1 release")
    assert told == [(DOMAIN, "prune 1 release")]


def test_a_site_is_charged_to_its_server_or_to_its_set_of_servers() -> None:
    assert group_key(site_declaration(server="web-1")) == "web-1"
    assert group_key(site_declaration(servers=["web-2", "web-1"])) == ("web-1", "web-2")


@dataclass
class CappedPool(RecordingPool):
    caps: dict[str, int | None] | None = None

    def session_cap(self, server: str) -> int | None:
        return (self.caps or {}).get(server)


def test_the_limit_is_capped_by_the_smallest_session_cap_and_reconfigured_in_place(rig: Rig) -> None:
    pool = CappedPool({}, caps={"web-1": 4, "web-2": 2, "local": None})
    bench = Workbench(rig.bench.settings.model_copy(update={"concurrency": 3, "allow_local": False}), rig.store,
                      pool)  # type: ignore[arg-type]
    assert pool.allow_local is False
    limiter = bench.limit
    assert (limiter.cap("web-1"), limiter.cap(("web-1", "web-2")), limiter.cap("local")) == (4, 2, None)
    assert limiter.cap(("local", "web-1")) == 4
    bench.reconfigure(bench.settings.model_copy(update={"concurrency": 5, "allow_local": True}))
    assert bench.limit is limiter and limiter.concurrency == 5 and pool.allow_local is True


def test_the_site_lock_is_held_on_the_contexts_server_only(rig: Rig) -> None:
    site = rig.site()
    ctx = rig.bench.context(site, None, "web-2")
    lock = rig.on("web-2").root / "deployments" / DOMAIN / ".reconciler-lock"

    async def go() -> None:
        async with rig.bench.site_lock(ctx, "prune") as facts:
            assert facts.domain == DOMAIN and lock.exists()
            other = rig.bench.context(site, None, "web-2")
            with pytest.raises(SiteLocked):
                async with rig.bench.site_lock(other, "deploy"):
                    pass
        assert not lock.exists()

    asyncio.run(go())
    assert rig.on("web-1").sent == []
    assert ctx.lease is not None and ctx.lease.lock_path.endswith(".reconciler-lock"), "the lock is the context's lease"


def test_a_probe_is_one_command_for_all_the_sites_of_a_server(rig: Rig) -> None:
    sites = [rig.site(), rig.site("blog.example.com"), rig.site("pinned.example.com", pin="06122026-120000")]
    facts = asyncio.run(rig.bench.probe("web-1", sites))
    assert set(facts.sites) == {DOMAIN, "blog.example.com", "pinned.example.com"}
    assert len(rig.on("web-1").sent) == 1
    assert set(facts.heads) == {(str(rig.app), "refs/heads/main")}, "a pinned site resolves no head"
