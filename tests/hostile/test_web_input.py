"""Hostile input to the daemon's HTTP API, and secret rotation on SIGHUP.

Most tests drive the real aiohttp application in this process (`build_app` behind aiohttp's
TestServer, over a real socket); the SIGHUP test runs the real daemon process and signals it.
Each input here used to be answered with HTTP 500 (an unhandled exception in a handler), or, in
the CLI, with a traceback; after a SIGHUP the old token and webhook secret kept working.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import signal
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pygit2
import pytest
from aiohttp.test_utils import TestClient, TestServer

from reconciler.config import Settings
from reconciler.engine import pinning
from reconciler.engine.converge import ssh_options
from reconciler.engine.store import Store
from reconciler.remote.transport.pool import TransportPool
from reconciler.service.http.app import build_app
from reconciler.service.http.context import WebContext
from reconciler.service.metrics import PassStats
from tests.support import Daemons, World, app_commit, free_port, git
from tests.support.client import call

DOMAIN = "shop.example.com"
TOKEN = "api-token-for-tests"
SECRET = "webhook-secret-for-tests"


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World.create(tmp_path, domain=DOMAIN)


Scenario = Callable[[TestClient[Any, Any]], Awaitable[None]]


def against_app(settings: Settings, scenario: Scenario) -> None:
    """Run `scenario` with a client of the real app built on `settings`, served on a real socket
    on 127.0.0.1: `listen` (loopback unless the settings name another host) gets that socket's
    port, so the Host header the client sends is the endpoint's own."""
    port = free_port()
    host = (settings.listen or "127.0.0.1:0").rpartition(":")[0]
    settings = settings.model_copy(update={"listen": f"{host}:{port}"})

    async def go() -> None:
        store = Store(settings.db_path)
        pool = TransportPool(ssh_options(settings), allow_local=settings.allow_local)
        ctx = WebContext(lambda: settings, store, pool, PassStats(), lambda: None, lambda domains: None,
                         asyncio.Event())
        client = TestClient(TestServer(build_app(ctx), host="127.0.0.1", port=port))
        await client.start_server()
        try:
            await scenario(client)
        finally:
            await client.close()
            store.close()

    asyncio.run(go())


async def raw_request(client: TestClient[Any, Any], head: bytes, body: bytes = b"") -> int:
    """Send one request as raw bytes (headers not valid UTF-8 included); the response status.
    `head` is the request line and headers but Host, which is the endpoint's own."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        host = f"Host: {client.host}:{client.port}\r\n".encode()
        writer.write(head + host + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        await writer.drain()
        status_line = await reader.readline()
        return int(status_line.split()[1])
    finally:
        writer.close()


def http_status(url: str, data: bytes, headers: dict[str, str]) -> int:
    return call(url, data=data, headers=headers, method="POST").status


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def two_releases(world: World) -> tuple[str, str]:
    world.declare(script="echo ok\n")
    world.reconcile_in_process()
    app_commit(world.app, "v2")
    world.reconcile_in_process()
    old, new = world.releases()
    return old, new


# --- hostile input: tokens and signatures that are not ASCII ----------------------------------------


def test_non_ascii_bearer_token_is_401_not_500(world: World) -> None:
    """`Authorization: Bearer é` (and the same as a raw latin-1 byte, and on a read):
    before, `hmac.compare_digest` raised TypeError on a non-ASCII str and the API answered 500."""
    settings = world.settings(api_token=TOKEN)
    off_loopback = world.settings(api_token=TOKEN, listen="0.0.0.0:8080")
    rollback = f"/api/sites/{DOMAIN}/rollback"

    async def scenario(client: TestClient[Any, Any]) -> None:
        for value in ("Bearer é", "Bearer " + TOKEN[:-1] + "é", "é"):
            response = await client.post(rollback, json={}, headers={"Authorization": value})
            assert response.status == 401, (value, response.status, await response.text())
        head = f"POST {rollback} HTTP/1.1\r\n".encode() + b"Authorization: Bearer \xe9\xff\r\n"
        assert await raw_request(client, head) == 401
        # The right token still works (no such site declared: 404, which is past the token check).
        response = await client.post(rollback, json={}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status == 404, await response.text()

    async def reads(client: TestClient[Any, Any]) -> None:
        for path in ("/api/sites", "/metrics"):
            response = await client.get(path, headers={"Authorization": "Bearer é"})
            assert response.status == 401, (path, response.status)
            head = f"GET {path} HTTP/1.1\r\n".encode() + b"Authorization: Bearer \xe9\r\n"
            assert await raw_request(client, head) == 401, path
            response = await client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
            assert response.status == 200, (path, response.status)

    against_app(settings, scenario)
    against_app(settings, reads)
    against_app(off_loopback, reads)


def test_non_ascii_webhook_signature_is_401_not_500(world: World) -> None:
    """`X-Hub-Signature-256: sha256=é` (GitHub), and the same in the Gitea and GitLab headers:
    before, TypeError from `hmac.compare_digest` → 500."""
    settings = world.settings(webhook_secret=SECRET)
    body = json.dumps({"repository": {"clone_url": "https://example.com/nobody/nothing.git"}}).encode()

    async def scenario(client: TestClient[Any, Any]) -> None:
        for header, value in (("X-Hub-Signature-256", "sha256=é"), ("X-Hub-Signature-256", sign(body)[:-1] + "é"),
                              ("X-Gitea-Signature", "é"), ("X-Forgejo-Signature", "é" * 64),
                              ("X-Gitlab-Token", "é"), ("X-Gitlab-Token", SECRET + "é")):
            response = await client.post("/hooks/git", data=body, headers={header: value})
            assert response.status == 401, (header, value, response.status, await response.text())
        head = b"POST /hooks/git HTTP/1.1\r\nX-Hub-Signature-256: sha256=\xe9\r\n"
        assert await raw_request(client, head, body) == 401
        response = await client.post("/hooks/git", data=body, headers={"X-Hub-Signature-256": sign(body)})
        assert response.status == 202, await response.text()

    against_app(settings, scenario)


# --- hostile input: deployment ids --------------------------------------------------------------------


def test_deployment_ids_that_are_not_sqlite_integers_are_404_not_500(world: World) -> None:
    """`²` (str.isdigit but not int()), 5000 digits (int() refuses) and 99999999999999999999
    (SQLite OverflowError) used to be 500; every id that names no deployment is 404."""
    old, _ = two_releases(world)
    settings = world.settings(api_token=TOKEN)  # reads need the token, on loopback too
    store = Store(settings.db_path)
    try:
        rows = store.deployments(DOMAIN)
    finally:
        store.close()
    real = next(row["id"] for row in rows if row["release"] == old)
    ids = ["²", "¹²", "٣", "1" * 5000, "99999999999999999999", str(2**63), str(2**63 - 1), "0", "-1", "+1",
           " 1", "1 ", "1.0", "0x1", "%C2%B2", "%00", "1%0A"]

    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def scenario(client: TestClient[Any, Any]) -> None:
        for ident in ids:
            response = await client.get(f"/api/sites/{DOMAIN}/deployments/{ident}/log", headers=auth)
            assert response.status == 404, (ident[:30], response.status, await response.text())
        # A real id still streams its log (its own site only).
        response = await client.get(f"/api/sites/{DOMAIN}/deployments/other.example.com/log", headers=auth)
        assert response.status == 404
        response = await client.get(f"/api/sites/other.example.com/deployments/{real}/log", headers=auth)
        assert response.status == 404
        response = await client.get(f"/api/sites/{DOMAIN}/deployments/{real}/log", headers=auth)
        assert response.status == 200
        text = await response.text()
        assert "event: end" in text and "ok" in text, text

    against_app(settings, scenario)


# --- hostile input: a concurrent pin commit -----------------------------------------------------------


def race_the_pin(monkeypatch: pytest.MonkeyPatch, repo: Path, pin: str) -> list[str]:
    """Make the next `set_pin` lose a real race: between its reading the branch tip and its commit,
    another pin write (`pin`) lands from the same tip. Returns the winner's commit id once made.
    The hook is where `set_pin` makes the commit's author: this user's identity (`_signature`, the
    CLI without --author) or the one it was given (`_parse_author`: the API says who asked)."""
    signature, parse_author = pinning._signature, pinning._parse_author
    winner: list[str] = []

    def concurrent_write() -> None:
        if not winner:
            winner.append("")  # the nested write must not race itself
            winner[0] = pinning.set_pin(repo, "main", DOMAIN, pin)

    def signature_after_a_concurrent_write(repository: pygit2.Repository) -> pygit2.Signature:
        concurrent_write()
        return signature(repository)

    def author_after_a_concurrent_write(text: str) -> pygit2.Signature:
        concurrent_write()
        return parse_author(text)

    monkeypatch.setattr(pinning, "_signature", signature_after_a_concurrent_write)
    monkeypatch.setattr(pinning, "_parse_author", author_after_a_concurrent_write)
    return winner


def test_concurrent_pin_commit_is_409_from_the_api(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """libgit2 refuses the stale parent ("current tip is not the first parent"); that GitError was
    not a ReconcilerError, so the API answered 500. It is a conflict: 409, nothing lost."""
    old, new = two_releases(world)
    settings = world.settings(api_token=TOKEN)
    winner = race_the_pin(monkeypatch, world.decl, new)

    async def scenario(client: TestClient[Any, Any]) -> None:
        response = await client.post(f"/api/sites/{DOMAIN}/rollback", json={"release": old},
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        body = await response.json()
        assert response.status == 409, (response.status, body)
        assert "moved" in body["error"] and "run the command again" in body["error"], body

    against_app(settings, scenario)
    assert winner and world.tip() == winner[0], "the concurrent commit is the tip: no lost update"
    assert f'pin = "{new}"' in git(world.decl, "show", f"main:sites.d/{DOMAIN}.toml")


@pytest.mark.parametrize("command", ["rollback", "unpin"])
def test_concurrent_pin_commit_exits_1_in_the_cli(world: World, monkeypatch: pytest.MonkeyPatch,
                                                  command: str) -> None:
    """`reconciler rollback` / `unpin` losing the race used to die with a pygit2.GitError
    traceback; now exit 1 with one line and the winner's commit on the branch."""
    old, new = two_releases(world)
    if command == "unpin":
        assert world.run_cli("rollback", DOMAIN).rc == 0
    winner = race_the_pin(monkeypatch, world.decl, new)
    args = [command, DOMAIN, old] if command == "rollback" else [command, DOMAIN]
    rc, out, err = world.run_cli(*args)
    assert rc == 1, (rc, out, err)
    assert out == "", out
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("reconciler: ") and "moved" in err, err
    assert winner and world.tip() == winner[0]


# --- rotation: SIGHUP rotates the token and the webhook secret --------------------------------------------


@pytest.fixture
def started(tmp_path: Path, daemons: Daemons) -> Iterator[tuple[World, str]]:
    world = World.create(tmp_path, daemons=daemons, domain=DOMAIN)
    yield world, f"http://127.0.0.1:{free_port()}"
    daemons.close()


def test_sighup_rotates_api_token_and_webhook_secret(started: tuple[World, str]) -> None:
    """Before, web.py captured the settings once: after new secrets and SIGHUP ("configuration
    reloaded") the old token was still authorized, the new one got 401, the old secret got 202."""
    world, root = started
    listen = root.removeprefix("http://")
    world.write_config(interval=3600, listen=listen, api_token="old-token", webhook_secret="old-secret")
    daemon = world.start_daemon()
    rollback = f"{root}/api/sites/nobody.example.com/rollback"  # authorized: 404 (no such site); else 401
    sent = itertools.count()

    def status(token: str) -> int:
        return http_status(rollback, b"{}", {"Content-Type": "application/json", "Authorization": f"Bearer {token}"})

    def hook(secret: str) -> int:
        # A new delivery each time (its own body): the same body twice is a replay (test_webhook_replay.py).
        body = json.dumps({"repository": {"clone_url": "https://example.com/nobody/nothing.git"},
                           "delivery": next(sent)}).encode()
        return http_status(f"{root}/hooks/git", body, {"X-Hub-Signature-256": sign(body, secret)})

    def answering() -> bool:
        assert daemon.alive(), daemon.tail()
        try:
            return status("old-token") == 404
        except OSError:
            return False

    world.wait(answering, "the daemon's HTTP endpoint")
    assert status("new-token") == 401 and hook("old-secret") == 202 and hook("new-secret") == 401

    world.write_config(interval=3600, listen=listen, api_token="new-token", webhook_secret="new-secret")
    daemon.signal(signal.SIGHUP)
    world.wait(lambda: status("new-token") == 404, "the new token to be accepted after SIGHUP", timeout=15)
    assert status("old-token") == 401
    assert hook("old-secret") == 401
    assert hook("new-secret") == 202
    assert daemon.alive(), daemon.tail()
