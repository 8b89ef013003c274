"""service/http/app.py, the endpoint's assembly: the route table (every route, with its method),
the order of the checks every request passes (Host, then the throttle of failed
authentications, then authentication), and `serve`, which listens on the `listen` address. The
app runs in this process (tests/support/inprocess_app.py); what each route does is proven in
the test file of its module."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from reconciler.config import Settings, token_digest
from reconciler.engine.converge import ssh_options
from reconciler.engine.store import Store
from reconciler.remote.transport.pool import TransportPool
from reconciler.service.http.actions import ACTIONS
from reconciler.service.http.app import SESSIONS, THROTTLES, build_app, serve
from reconciler.service.http.context import WebContext
from reconciler.service.http.security import SESSION_COOKIE
from reconciler.service.metrics import PassStats
from tests.support import free_port
from tests.support.inprocess_app import Endpoint, against_app

TOKEN = "api-token-for-tests"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def test_the_route_table(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], endpoint: Endpoint) -> None:
        assert endpoint.app is not None
        routes = {(route.method, route.resource.canonical) for route in endpoint.app.router.routes()
                  if route.resource is not None and route.method != "HEAD"}
        assert routes == {
            ("GET", "/"), ("POST", "/api/session"), ("DELETE", "/api/session"), ("GET", "/api/whoami"),
            ("GET", "/metrics"),
            ("GET", "/api/sites"), ("GET", "/api/sites/{domain}/deployments"),
            ("GET", "/api/sites/{domain}/deployments/{id}/log"), ("GET", "/api/events"),
            *(("POST", f"/api/sites/{{domain}}/{name}") for name in ("rollback", "unpin", "retry", "redeploy")),
            ("POST", "/hooks/git"),
        }
        assert set(ACTIONS) == {"rollback", "unpin", "retry", "redeploy"}

    against_app(tmp_path, scenario, api_token=TOKEN)


def test_unknown_paths_and_methods_are_answered_only_past_authentication(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], endpoint: Endpoint) -> None:
        assert (await client.get("/api/nothing-here")).status == 401, "the route table is no oracle"
        assert (await client.get("/api/nothing-here", headers=BEARER)).status == 404
        assert (await client.get("/api/sites/shop.example.com/rollback", headers=BEARER)).status == 405
        assert (await client.post("/api/sites", headers=BEARER)).status == 405
        assert (await client.get("/hooks/git")).status == 405
        page = await client.get("/")
        assert page.status == 200 and page.content_type == "text/html"

    against_app(tmp_path, scenario, api_token=TOKEN)


def test_host_is_checked_before_the_throttle_and_the_throttle_before_authentication(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], endpoint: Endpoint) -> None:
        assert endpoint.app is not None
        response = await client.post("/api/session", json={"token": TOKEN})
        cookie = {"Cookie": f"{SESSION_COOKIE}={response.cookies[SESSION_COOKIE].value}"}
        api = endpoint.app[THROTTLES]["api_token"]
        while api.retry_after("127.0.0.1") == 0:  # this client has guessed until it must wait
            api.failed("127.0.0.1")
        # Host first: a foreign name is refused whatever else, and no check after it runs.
        response = await client.get("/api/sites", headers={**BEARER, "Host": "rebind.example"})
        assert response.status == 421
        # Then the throttle: the right token gets the waiting client's 429, unchecked.
        response = await client.get("/api/sites", headers=BEARER)
        assert response.status == 429 and int(response.headers["Retry-After"]) >= 1
        assert (await client.get("/api/sites", headers={"Authorization": "Bearer wrong"})).status == 429
        # What tries no secret passes the throttle to authentication: a session, the page.
        assert (await client.get("/api/sites", headers=cookie)).status == 200
        assert (await client.get("/api/sites")).status == 401
        assert (await client.get("/")).status == 200
        assert len(endpoint.app[SESSIONS]) == 1

    against_app(tmp_path, scenario, api_token=TOKEN)


def test_each_app_has_its_own_memories(tmp_path: Path) -> None:
    settings = Settings(repo=tmp_path, state_dir=tmp_path / "state", listen="127.0.0.1:9180", api_token=TOKEN)
    store = Store(settings.db_path)
    try:
        ctx = WebContext(lambda: settings, store, TransportPool(ssh_options(settings)), PassStats(),
                         lambda: None, lambda domains: None, asyncio.Event())
        first, second = build_app(ctx), build_app(ctx)
        first[SESSIONS].create({token_digest(TOKEN): "api"}, token_digest(TOKEN))
        assert len(first[SESSIONS]) == 1 and len(second[SESSIONS]) == 0
        assert first[THROTTLES]["api_token"] is not second[THROTTLES]["api_token"]
        assert set(first[THROTTLES]) == {"api_token", "webhook_secret"}
    finally:
        store.close()


def test_serve_listens_on_a_bracketed_ipv6_listen_address(tmp_path: Path) -> None:
    port = free_port()
    settings = Settings(repo=tmp_path, state_dir=tmp_path / "state", listen=f"[::1]:{port}", api_token=TOKEN)

    async def go() -> tuple[int, int]:
        store = Store(settings.db_path)
        ctx = WebContext(lambda: settings, store, TransportPool(ssh_options(settings)), PassStats(),
                         lambda: None, lambda domains: None, asyncio.Event())
        runner = await serve(ctx)
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://[::1]:{port}/api/sites", headers=BEARER) as response:
                    read = response.status
                async with session.get(f"http://[::1]:{port}/", headers={"Host": "rebind.example"}) as response:
                    foreign = response.status
        finally:
            ctx.stopping.set()
            await runner.cleanup()
            store.close()
        return read, foreign

    assert asyncio.run(go()) == (200, 421)
