"""One engine workbench over recording servers on this host (tests/support/recording.py), for the
unit tests of the engine's modules that talk to servers: real commands on real files in a private
mount namespace per server, no SSH, each command recorded; a real declarations repository, app
repository and state database.

    with engine_rig(tmp_path, ("web-1",)) as rig:
        site = rig.site(script="echo built\\n")
        ctx = rig.context(site)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.declarations import SiteDeclaration
from reconciler.core.facts import SiteFacts
from reconciler.core.layout import is_release
from reconciler.engine.apply import SiteContext
from reconciler.engine.store import Store
from reconciler.engine.workbench import Workbench
from tests.support.config import settings_for
from tests.support.recording import RecordingPool, RecordingTransport
from tests.support.repos import make_app_repo, make_decl_repo, site_declaration
from tests.support.sshd import mount_namespace_problem

DOMAIN = "shop.example.com"


@dataclass
class Rig:
    tmp: Path
    servers: tuple[str, ...]
    app: Path
    decl: Path
    base: Path
    pool: RecordingPool
    store: Store
    bench: Workbench

    def site(self, domain: str = DOMAIN, **fields: Any) -> SiteDeclaration:
        """A declaration on every server of the rig (one: `server`, more: `servers`)."""
        where: dict[str, Any] = ({"server": self.servers[0]} if len(self.servers) == 1
                                 else {"servers": list(self.servers)})
        return site_declaration(domain=domain, repository=str(self.app), base_path=str(self.base),
                                **{**where, **fields})

    def context(self, site: SiteDeclaration, server: str = "") -> SiteContext:
        return self.bench.context(site, None, server)

    def on(self, server: str) -> RecordingTransport:
        return self.pool.servers[server]

    def facts(self, site: SiteDeclaration, server: str = "") -> SiteFacts:
        """The site's facts as the probe reads them from `server` now."""
        found = asyncio.run(self.bench.probe(server or site.server, [site]))
        return found.sites[site.domain]

    def live(self, server: str, domain: str = DOMAIN) -> str | None:
        link = self.on(server).root / domain
        return Path(str(link.readlink())).name if link.is_symlink() else None

    def releases(self, server: str, domain: str = DOMAIN) -> list[str]:
        deployments = self.on(server).root / "deployments" / domain
        return sorted(p.name for p in deployments.iterdir() if p.is_dir() and is_release(p.name)) \
            if deployments.is_dir() else []

    def clear(self) -> None:
        for transport in self.pool.servers.values():
            transport.clear()


@contextmanager
def engine_rig(tmp_path: Path, servers: tuple[str, ...] = ("web-1",), **settings: Any) -> Iterator[Rig]:
    """A rig over recording servers; skips the test where this host cannot make mount namespaces."""
    if (why := mount_namespace_problem()) is not None:
        pytest.skip(why)
    base = tmp_path / "base"
    base.mkdir()
    pool = RecordingPool({s: RecordingTransport(s, tmp_path / "servers" / s, str(base)) for s in servers})
    decl = make_decl_repo(tmp_path / "decl")
    config = settings_for(decl, tmp_path / "state", **settings)
    store = Store(config.db_path)
    bench = Workbench(config, store, pool)  # type: ignore[arg-type]  # the engine asks only get/session_cap
    try:
        yield Rig(tmp_path, servers, make_app_repo(tmp_path / "app"), decl, base, pool, store, bench)
    finally:
        store.close()
