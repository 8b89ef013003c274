"""The real HTTP application (`build_app`) in this process, behind aiohttp's test client on a real
socket on 127.0.0.1, with a context a test controls: its settings (replaced as a SIGHUP would),
its declarations, and what the app asked of the daemon (sites to look at, fetches).

    def test_x(tmp_path: Path) -> None:
        async def scenario(client: TestClient[Any, Any], endpoint: Endpoint) -> None:
            ...
        against_app(tmp_path, scenario, api_token="...")
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from reconciler.config import Settings
from reconciler.engine.converge import ssh_options
from reconciler.engine.store import Store
from reconciler.remote.transport.pool import TransportPool
from reconciler.service.http.app import build_app
from reconciler.service.http.context import WebContext
from reconciler.service.metrics import PassStats
from tests.support.net import free_port


class Endpoint:
    """The app under test and what surrounds it: `settings` (`update` replaces them as a SIGHUP
    would), `sites` ({domain: repository URL}, the declarations the app sees), `requested` (the
    sets of sites it asked the daemon for) and `fetches` (how often it asked for a fetch)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sites: dict[str, str] = {}
        self.requested: list[set[str]] = []
        self.fetches = 0
        self.app: web.Application | None = None
        self.ctx: WebContext | None = None

    def update(self, **changes: Any) -> None:
        self.settings = self.settings.model_copy(update=changes)

    def declarations(self) -> Any:
        sites = {domain: SimpleNamespace(repository=url) for domain, url in self.sites.items()}
        return SimpleNamespace(sites=sites, invalid={})

    def fetch(self) -> None:
        self.fetches += 1


Scenario = Callable[[TestClient[Any, Any], Endpoint], Awaitable[None]]


def against_app(tmp_path: Path, scenario: Scenario, *, fetch: bool = False, **settings: Any) -> Endpoint:
    """Run `scenario(client, endpoint)` against the real app listening on 127.0.0.1 (its `listen`,
    so the Host the client sends is the endpoint's own). With `fetch`, the context can fetch the
    declarations (as the daemon's can when `repo` is a URL). No cookie jar: every cookie a test
    sends is one it means to send."""
    port = free_port()
    values = {"repo": tmp_path, "state_dir": tmp_path / "state", "listen": f"127.0.0.1:{port}", **settings}
    endpoint = Endpoint(Settings(**values))

    async def go() -> None:
        store = Store(endpoint.settings.db_path)
        endpoint.ctx = WebContext(lambda: endpoint.settings, store, TransportPool(ssh_options(endpoint.settings)),
                                  PassStats(), endpoint.declarations,
                                  lambda domains: endpoint.requested.append(set(domains)), asyncio.Event(),
                                  fetch=endpoint.fetch if fetch else None)
        endpoint.app = build_app(endpoint.ctx)
        client = TestClient(TestServer(endpoint.app, host="127.0.0.1", port=port), cookie_jar=aiohttp.DummyCookieJar())
        await client.start_server()
        try:
            await scenario(client, endpoint)
        finally:
            endpoint.ctx.stopping.set()
            await client.close()
            store.close()

    asyncio.run(go())
    return endpoint
