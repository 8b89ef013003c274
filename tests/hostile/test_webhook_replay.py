"""Replayed webhook deliveries, and GitLab's clear-text token.

A forge signs the body of a push delivery, and nothing else: whoever captured one (a proxy log,
a misdirected hook, the forge's own delivery log) could send it again and again, and each copy
made the daemon poll. Now an accepted delivery is remembered for an hour (at most 10,000) by
its delivery id header (X-GitHub-Delivery, X-Gitea-Delivery, X-Forgejo-Delivery,
X-Gogs-Delivery, GitLab's Idempotency-Key and X-Gitlab-Event-UUID) and by its body's digest
(the id header is not signed: a fresh id on the same body is still a replay); a replay is
answered 200 {"duplicate": true} and triggers nothing. GitLab's X-Gitlab-Token is the secret
itself, in clear on every delivery: it is accepted only with `webhook_gitlab_token = true`.

The daemon tests run against another checkout with RECONCILER_UNDER_TEST=/tmp/oldmain
(tests/support/process.py), where they fail: a replay was 202 and polled again, and the clear
token was accepted without any opt-in.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from reconciler.config import Settings
from reconciler.engine.converge import ssh_options
from reconciler.engine.store import Store
from reconciler.remote.transport.pool import TransportPool
from reconciler.service.http.app import build_app
from reconciler.service.http.context import WebContext
from reconciler.service.http.hooks import MAX_DELIVERIES, REPLAY_WINDOW, Deliveries
from reconciler.service.metrics import PassStats
from tests.support import Daemons, World, app_commit, client, free_port, git
from tests.support.client import call
from tests.support.process import ROOT, check_code_under_test, code_under_test

DOMAIN = "shop.example.com"
TOKEN = "api-token-for-tests"
SECRET = "webhook-secret-for-tests"
REPOSITORY = "https://git.example.com/acme/shop.git"


def old_code() -> bool:
    return code_under_test() != ROOT


def github(body: bytes, delivery: str | None = None, secret: str = SECRET) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "X-GitHub-Event": "push",
               "X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}
    if delivery is not None:
        headers["X-GitHub-Delivery"] = delivery
    return headers


def push(after: str, repository: str = REPOSITORY) -> bytes:
    return json.dumps({"ref": "refs/heads/main", "after": after, "repository": {"clone_url": repository}}).encode()


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    answer = call(url, data=body, headers=headers, method="POST")
    return answer.status, answer.json()


# --- the daemon ----------------------------------------------------------------------------------------


def daemon_world(tmp_path: Path, daemons: Daemons, port: int, **config: Any) -> World:
    world = World.create(tmp_path, daemons=daemons, domain=DOMAIN, interval=3600, listen=f"127.0.0.1:{port}",
                         api_token=TOKEN, webhook_secret=SECRET, allow_local=None if old_code() else True, **config)
    if old_code():
        world.launcher.source = check_code_under_test()
    return world


def test_a_replayed_delivery_triggers_no_poll(tmp_path: Path, daemons: Daemons) -> None:
    port = free_port()
    root = f"http://127.0.0.1:{port}"
    world = daemon_world(tmp_path, daemons, port)
    world.declare(DOMAIN, script="echo ok\n")
    daemon = world.start_daemon()

    def passes() -> float:
        return client.passes(root, TOKEN)

    def settled() -> float | None:
        assert daemon.alive(), daemon.tail()
        return passes() or None

    first = world.wait(settled, "the first pass (interval 3600: after it, only a hook makes one)")
    hook = root + "/hooks/git"
    body = push(app_commit(world.app, "v2"), str(world.app))

    status, answer = post(hook, body, github(body, "delivery-1"))
    assert (status, answer) == (202, {"sites": [DOMAIN]}), (status, answer)
    world.wait(lambda: passes() >= first + 1, "the pass the delivery asked for")
    world.wait(lambda: world.on_disk().live_commit() == git(world.app, "rev-parse", "HEAD"), "the new commit live")
    after_one = passes()

    # The same delivery again, byte for byte; then the same signed body under a fresh delivery id.
    for delivery in ("delivery-1", "delivery-2-forged"):
        status, answer = post(hook, body, github(body, delivery))
        assert status == 200 and answer.get("duplicate") is True, (delivery, status, answer)
    # Neither may poll: give the daemon time to (wrongly) react, then look.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert passes() == after_one, "a replayed delivery triggered a pass"
        time.sleep(0.2)

    # A new delivery (new body, new id) still works.
    newer = push(app_commit(world.app, "v3"), str(world.app))
    status, answer = post(hook, newer, github(newer, "delivery-3"))
    assert (status, answer) == (202, {"sites": [DOMAIN]}), (status, answer)
    world.wait(lambda: passes() >= after_one + 1, "the pass the new delivery asked for")
    assert daemon.alive(), daemon.tail()


def test_gitlab_clear_token_needs_the_opt_in(tmp_path: Path, daemons: Daemons) -> None:
    """X-Gitlab-Token is refused (401, naming the setting) until reconciler.toml says
    webhook_gitlab_token = true, which a SIGHUP applies."""
    port = free_port()
    root = f"http://127.0.0.1:{port}"
    world = daemon_world(tmp_path, daemons, port)
    daemon = world.start_daemon()
    sent = iter(range(1000))

    def gitlab() -> tuple[int, Any]:
        body = push(f"{next(sent):040x}")  # a new delivery each time
        return post(root + "/hooks/git", body, {"Content-Type": "application/json", "X-Gitlab-Event": "Push Hook",
                                                 "X-Gitlab-Token": SECRET})

    def answering() -> tuple[int, Any] | None:
        assert daemon.alive(), daemon.tail()
        try:
            return gitlab()
        except OSError:
            return None

    status, answer = world.wait(answering, "the daemon's HTTP endpoint")
    assert status == 401 and "webhook_gitlab_token" in answer["error"], (status, answer)

    world.write_config(interval=3600, listen=f"127.0.0.1:{port}", api_token=TOKEN, webhook_secret=SECRET,
                       webhook_gitlab_token=True)
    daemon.signal(signal.SIGHUP)
    world.wait(lambda: gitlab()[0] == 202, "the GitLab token to be accepted once opted in (SIGHUP)", timeout=15)
    assert daemon.alive(), daemon.tail()


# --- the app, in this process: every forge's delivery ids ------------------------------------------------


Scenario = Callable[[TestClient[Any, Any], list[set[str]]], Awaitable[None]]


def against_app(tmp_path: Path, scenario: Scenario, **settings: Any) -> None:
    """`scenario(client, requested)` against the real app: one site on REPOSITORY; `requested`
    receives every set of domains the app asked the daemon to poll."""
    port = free_port()
    config = Settings(repo=tmp_path, state_dir=tmp_path / "state", listen=f"127.0.0.1:{port}",
                      webhook_secret=SECRET, **settings)
    decls: Any = SimpleNamespace(sites={DOMAIN: SimpleNamespace(repository=REPOSITORY, server="web-1")}, invalid={})
    requested: list[set[str]] = []

    async def go() -> None:
        store = Store(config.db_path)
        ctx = WebContext(lambda: config, store, TransportPool(ssh_options(config)), PassStats(), lambda: decls,
                         requested.append, asyncio.Event())
        client = TestClient(TestServer(build_app(ctx), host="127.0.0.1", port=port))
        await client.start_server()
        try:
            await scenario(client, requested)
        finally:
            await client.close()
            store.close()

    asyncio.run(go())


def gitea(body: bytes, delivery: str) -> dict[str, str]:
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    # What Gitea sends: its own id header, and GitHub's and Gogs' with the same value.
    return {"X-Gitea-Event": "push", "X-Gitea-Signature": digest, "X-Gitea-Delivery": delivery,
            "X-GitHub-Delivery": delivery, "X-Gogs-Delivery": delivery}


def forgejo(body: bytes, delivery: str) -> dict[str, str]:
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Forgejo-Event": "push", "X-Forgejo-Signature": digest, "X-Forgejo-Delivery": delivery}


def gitlab_idempotency(body: bytes, delivery: str) -> dict[str, str]:
    return {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": SECRET, "Idempotency-Key": delivery,
            "X-Gitlab-Event-UUID": delivery + "-event"}


def gitlab_event_uuid(body: bytes, delivery: str) -> dict[str, str]:
    return {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": SECRET, "X-Gitlab-Event-UUID": delivery}


FORGES: dict[str, Callable[[bytes, str], dict[str, str]]] = {
    "github": lambda body, delivery: github(body, delivery), "gitea": gitea, "forgejo": forgejo,
    "gitlab-idempotency-key": gitlab_idempotency, "gitlab-event-uuid": gitlab_event_uuid}


@pytest.mark.parametrize("forge", sorted(FORGES))
def test_each_forge_replay_is_a_duplicate(tmp_path: Path, forge: str) -> None:
    headers_for = FORGES[forge]

    async def scenario(client: TestClient[Any, Any], requested: list[set[str]]) -> None:
        async def send(body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
            response = await client.post("/hooks/git", data=body, headers=headers)
            return response.status, await response.json()

        body = push("a" * 40)
        # A refused delivery (bad signature or token) is not remembered: its id stays usable.
        bad = {key: (value + "0" if key in ("X-Hub-Signature-256", "X-Gitea-Signature", "X-Forgejo-Signature",
                                            "X-Gitlab-Token") else value)
               for key, value in headers_for(body, "d-1").items()}
        assert (await send(body, bad))[0] == 401
        assert await send(body, headers_for(body, "d-1")) == (202, {"sites": [DOMAIN]})
        assert requested == [{DOMAIN}]
        # The replay, the same body with a fresh id, and the same id with another body: duplicates.
        other = push("b" * 40)
        for replay_body, replay_headers in ((body, headers_for(body, "d-1")), (body, headers_for(body, "d-2")),
                                            (other, headers_for(other, "d-1"))):
            status, answer = await send(replay_body, replay_headers)
            assert status == 200 and answer == {"duplicate": True, "sites": []}, (status, answer)
        assert requested == [{DOMAIN}], "a duplicate asked for a poll"
        # A new delivery is not a duplicate.
        assert await send(other, headers_for(other, "d-3")) == (202, {"sites": [DOMAIN]})
        assert requested == [{DOMAIN}, {DOMAIN}]

    against_app(tmp_path, scenario, webhook_gitlab_token=forge.startswith("gitlab"))


def test_a_delivery_without_an_id_is_accepted_once(tmp_path: Path) -> None:
    """No delivery id header (an older forge, a hand-made hook): accepted, and deduplicated by
    its body."""

    async def scenario(client: TestClient[Any, Any], requested: list[set[str]]) -> None:
        body = push("c" * 40)
        response = await client.post("/hooks/git", data=body, headers=github(body))
        assert response.status == 202, await response.text()
        response = await client.post("/hooks/git", data=body, headers=github(body))
        assert response.status == 200 and (await response.json())["duplicate"] is True
        assert requested == [{DOMAIN}]

    against_app(tmp_path, scenario)


def test_gitlab_token_is_refused_without_the_opt_in(tmp_path: Path) -> None:
    """Even the right X-Gitlab-Token is 401 (saying which setting) unless webhook_gitlab_token;
    the signed forges do not need it."""

    async def scenario(client: TestClient[Any, Any], requested: list[set[str]]) -> None:
        body = push("d" * 40)
        response = await client.post("/hooks/git", data=body, headers=gitlab_event_uuid(body, "g-1"))
        answer = await response.json()
        assert response.status == 401 and "webhook_gitlab_token" in answer["error"], answer
        response = await client.post("/hooks/git", data=body, headers=github(body, "g-2"))
        assert response.status == 202, await response.text()
        assert requested == [{DOMAIN}]

    against_app(tmp_path, scenario)


# --- the memory of deliveries ---------------------------------------------------------------------------


def test_deliveries_are_forgotten_after_the_window_and_beyond_the_limit() -> None:
    now = [0.0]
    memory = Deliveries(window=60.0, limit=3, clock=lambda: now[0])
    memory.remember([b"a"])
    now[0] = 30.0
    memory.remember([b"b", b"c"])
    assert memory.seen([b"a"]) and memory.seen([b"x", b"c"]) and not memory.seen([b"x"])
    now[0] = 45.0
    memory.remember([b"d"])  # a fourth key: the oldest goes
    assert len(memory) == 3 and not memory.seen([b"a"]) and memory.seen([b"b"])
    now[0] = 90.0  # b and c were remembered at 30: their hour (here a minute) is over
    assert not memory.seen([b"b"]) and not memory.seen([b"c"]) and memory.seen([b"d"])
    assert len(memory) == 1
    # The daemon's own bounds.
    assert (REPLAY_WINDOW, MAX_DELIVERIES) == (3600.0, 10_000)
    bounded = Deliveries()
    for number in range(MAX_DELIVERIES + 50):
        bounded.remember([number.to_bytes(4, "big")])
    assert len(bounded) == MAX_DELIVERIES
