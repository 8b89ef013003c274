"""Online guessing of `api_token` is throttled, and the session cookie is Secure behind a TLS
proxy.

A reproduction guessed "Spring2026" through POST /api/session at about 2,400 tries a second from
one keep-alive connection (3,200 a second with the bearer header on /api/sites), and the
daemon's log recorded none of the 6,000 failures. Now failed authentications are throttled per
client address, one allowance per secret (service/http/throttle.py): after FREE failures a client's
attempts are answered 429 with Retry-After, unchecked (the right token gets the same 429, so
there is nothing to learn), for exponentially longer; every counted failure is logged with the
client's address and the number of attempts refused since the one before. Another address is
not affected, nor a session cookie (a random 256-bit id, which guessing the token never made).

Behind a reverse proxy every client is the proxy's address, so `trusted_proxies` names the
proxies whose X-Forwarded-For says who the client is (and whose X-Forwarded-Proto: https makes
the cookie Secure); from any other peer those headers change nothing. `cookie_secure = true`
makes the cookie Secure always. Before, the cookie was Secure only on a TLS socket of our own,
which a proxy in front never is.

The daemon test hammers a real daemon from 127.0.0.x source addresses (the whole of 127/8 is
this machine) over real sockets; the others drive the real aiohttp application on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from reconciler.config import Settings
from reconciler.engine.converge import ssh_options
from reconciler.engine.store import Store
from reconciler.remote.transport.pool import TransportPool
from reconciler.service.http.app import build_app
from reconciler.service.http.context import WebContext
from reconciler.service.http.security import SESSION_COOKIE
from reconciler.service.metrics import PassStats
from tests.support import Daemons, World, free_port

DOMAIN = "shop.example.com"
TOKEN = "a-long-random-api-token-for-tests"
SECRET = "a-long-random-webhook-secret-for-tests"
FREE = 30       # reconciler.service.http.throttle.FREE: failures a client makes before it waits
SLACK = 8       # more checked failures than FREE + 1 would need 1 + 2 + ... + 64 s of waits to pass
ATTEMPTS = 300  # a guesser's budget in each test: far more than FREE + SLACK


class Client:
    """One HTTP/1.1 keep-alive connection to 127.0.0.1:`port` from the source address `source`."""

    def __init__(self, port: int, source: str) -> None:
        self.port, self.source = port, source
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15, source_address=(source, 0))

    def send(self, method: str, path: str, headers: dict[str, str] | None = None,
             body: bytes | None = None) -> tuple[int, dict[str, str], str]:
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
            response = self.conn.getresponse()
        except (ConnectionError, http.client.HTTPException):
            self.conn.close()  # reconnect once: the server may close a connection after an answer
            self.conn.request(method, path, body=body, headers=headers or {})
            response = self.conn.getresponse()
        text = response.read().decode(errors="replace")
        return response.status, {k.lower(): v for k, v in response.getheaders()}, text

    def sign_in(self, token: str) -> tuple[int, dict[str, str], str]:
        return self.send("POST", "/api/session", {"Content-Type": "application/json"},
                         json.dumps({"token": token}).encode())

    def read(self, token: str, path: str = "/api/sites") -> tuple[int, dict[str, str], str]:
        return self.send("GET", path, {"Authorization": f"Bearer {token}"})

    def close(self) -> None:
        self.conn.close()


def hammer(attempt: Callable[[int], tuple[int, dict[str, str], str]]) -> tuple[list[int], dict[str, str]]:
    """Wrong guesses until the first 429 (or the budget runs out): the statuses, the last headers."""
    statuses: list[int] = []
    headers: dict[str, str] = {}
    for number in range(ATTEMPTS):
        status, headers, _ = attempt(number)
        statuses.append(status)
        if status == 429:
            break
    return statuses, headers


def assert_throttled(statuses: list[int], headers: dict[str, str]) -> int:
    """A 429 with Retry-After came after more than FREE and at most FREE + SLACK failures."""
    assert statuses[-1] == 429, f"{len(statuses)} wrong guesses, never throttled: {sorted(set(statuses))}"
    assert set(statuses[:-1]) == {401}, statuses
    assert FREE < len(statuses) - 1 <= FREE + SLACK, len(statuses)
    retry_after = headers.get("retry-after", "")
    assert retry_after.isdigit() and int(retry_after) >= 1, headers
    return int(retry_after)


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- the daemon --------------------------------------------------------------------------------------


def test_guessing_the_token_is_throttled_per_address_and_logged(tmp_path: Path, daemons: Daemons) -> None:
    port = free_port()
    world = World.create(tmp_path, daemons=daemons, domain=DOMAIN, interval=3600, listen=f"127.0.0.1:{port}",
                         api_token=TOKEN, webhook_secret=SECRET)
    daemon = world.start_daemon()
    bystander = Client(port, "127.0.0.9")  # a dashboard or a scraper on another address

    def answering() -> bool:
        assert daemon.alive(), daemon.tail()
        return bystander.read(TOKEN)[0] == 200

    world.wait(answering, "the daemon's HTTP endpoint")
    guesser, bearer, forger = Client(port, "127.0.0.1"), Client(port, "127.0.0.3"), Client(port, "127.0.0.4")
    try:
        # POST /api/session, the way in the guessing took.
        statuses, headers = hammer(lambda n: guesser.sign_in(f"guess{n}"))
        retry_after = assert_throttled(statuses, headers)
        # While it waits, the right token is no different from a wrong one: nothing to learn.
        for status, _, text in (guesser.sign_in(TOKEN), guesser.read(TOKEN), guesser.read("wrong")):
            assert status == 429 and "try again" in text, (status, text)
        assert bystander.read(TOKEN)[0] == 200, "another address is not throttled"
        assert bystander.read("wrong")[0] == 401, "another address has its own allowance"

        # The bearer header on any guarded route counts against the same secret.
        routes = ["/api/sites", "/metrics", f"/api/sites/{DOMAIN}/deployments", "/api/events"]
        statuses, headers = hammer(lambda n: bearer.read(f"guess{n}", routes[n % len(routes)]))
        assert_throttled(statuses, headers)
        assert bearer.read(TOKEN, "/metrics")[0] == 429

        # Webhook signatures have an allowance of their own: a forger is throttled, its API
        # token still works (and a forge with a stale secret never locks the API out).
        body = json.dumps({"repository": {"clone_url": "https://example.com/nobody/nothing.git"}}).encode()
        statuses, headers = hammer(lambda n: forger.send("POST", "/hooks/git", {
            "X-Hub-Signature-256": sign(body, f"guess{n}"), "X-GitHub-Delivery": f"d{n}"}, body))
        assert_throttled(statuses, headers)
        assert forger.read(TOKEN)[0] == 200

        # Once the wait is over the next attempt is checked again; its log line says how many
        # attempts were refused unchecked meanwhile.
        time.sleep(retry_after)
        world.wait(lambda: guesser.sign_in("one-more-guess")[0] == 401, "the guesser's wait to end")
    finally:
        for client in (guesser, bearer, forger, bystander):
            client.close()

    def logged() -> list[str]:
        return [line for line in daemon.output().splitlines() if "failed authentication" in line]

    lines = world.wait(lambda: [line for line in logged() if "refused unchecked" in line], "the summary line")
    assert "from 127.0.0.1" in lines[0], lines
    everything = logged()
    for address, secret in (("127.0.0.1", "api_token"), ("127.0.0.3", "api_token"), ("127.0.0.4", "webhook_secret"),
                            ("127.0.0.9", "api_token")):
        mine = [line for line in everything if f"from {address}:" in line]
        assert mine and all(f"with the {secret} from" in line for line in mine), (address, everything)
        # One line per counted failure, none per refused attempt: the log stays bounded.
        assert len(mine) <= FREE + SLACK + 2, (address, len(mine))
    assert TOKEN not in daemon.output() and "guess1" not in daemon.output()
    assert daemon.alive(), daemon.tail()


# --- the application, in this process ------------------------------------------------------------------


Scenario = Callable[[int], Awaitable[None]]


def against_app(tmp_path: Path, scenario: Scenario, **settings: Any) -> None:
    """`scenario(port)` against the real app listening on 127.0.0.1:port."""
    port = free_port()
    current = Settings(repo=tmp_path, state_dir=tmp_path / "state", listen=f"127.0.0.1:{port}", api_token=TOKEN,
                       webhook_secret=SECRET, **settings)
    decls: Any = SimpleNamespace(sites={}, invalid={})

    async def go() -> None:
        store = Store(current.db_path)
        ctx = WebContext(lambda: current, store, TransportPool(ssh_options(current)), PassStats(), lambda: decls,
                         lambda domains: None, asyncio.Event())
        server = TestServer(build_app(ctx), host="127.0.0.1", port=port)
        await server.start_server()
        try:
            await scenario(port)
        finally:
            await server.close()
            store.close()

    asyncio.run(go())


async def call(port: int, method: str, path: str, source: str = "127.0.0.1", headers: dict[str, str] | None = None,
               json_body: Any = None) -> tuple[int, Any]:
    """One request from the source address `source` (its own connection): status and headers."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as session, \
            session.request(method, f"http://127.0.0.1:{port}{path}", headers=headers, json=json_body) as response:
        await response.read()
        return response.status, response.headers


async def ahammer(attempt: Callable[[int], Awaitable[tuple[int, Any]]]) -> tuple[list[int], dict[str, str]]:
    statuses: list[int] = []
    headers: dict[str, str] = {}
    for number in range(ATTEMPTS):
        status, raw = await attempt(number)
        statuses.append(status)
        headers = {k.lower(): v for k, v in raw.items()}
        if status == 429:
            break
    return statuses, headers


def test_a_session_cookie_keeps_working_while_its_address_is_throttled(tmp_path: Path) -> None:
    async def scenario(port: int) -> None:
        status, headers = await call(port, "POST", "/api/session", json_body={"token": TOKEN})
        assert status == 200
        cookie = {"Cookie": headers["Set-Cookie"].split(";", 1)[0]}
        statuses, last = await ahammer(lambda n: call(port, "GET", "/api/sites",
                                                      headers={"Authorization": f"Bearer guess{n}"}))
        assert_throttled(statuses, last)
        assert (await call(port, "GET", "/api/sites", headers=cookie))[0] == 200
        assert (await call(port, "GET", "/api/sites", headers={"Authorization": f"Bearer {TOKEN}"}))[0] == 429
        # A cookie-only request tries no secret: a stale cookie is 401, not counted, not refused.
        stale = {"Cookie": f"{SESSION_COOKIE}={'x' * 43}"}
        assert [(await call(port, "GET", "/api/sites", "127.0.0.2", stale))[0] for _ in range(FREE + SLACK)] == \
            [401] * (FREE + SLACK)

    against_app(tmp_path, scenario)


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_allowance(tmp_path: Path,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    """The proxy is 127.0.0.1; its X-Forwarded-For names the client; another peer's is ignored."""

    async def scenario(port: int) -> None:
        def via_proxy(client: str, token: str) -> Awaitable[tuple[int, Any]]:
            return call(port, "POST", "/api/session", headers={"X-Forwarded-For": f"192.0.2.1, {client}"},
                        json_body={"token": token})

        statuses, last = await ahammer(lambda n: via_proxy("198.51.100.7", f"guess{n}"))
        assert_throttled(statuses, last)
        assert (await via_proxy("198.51.100.8", TOKEN))[0] == 200, "another client behind the same proxy"
        assert (await via_proxy("198.51.100.7", TOKEN))[0] == 429

        # 127.0.0.2 is no trusted proxy: a fresh X-Forwarded-For each time changes nothing.
        statuses, last = await ahammer(lambda n: call(
            port, "POST", "/api/session", "127.0.0.2", {"X-Forwarded-For": f"203.0.113.{n % 250}"},
            {"token": f"guess{n}"}))
        assert_throttled(statuses, last)

    with caplog.at_level("WARNING", logger="reconciler"):
        against_app(tmp_path, scenario, trusted_proxies=["127.0.0.1"])
    addresses = {record.getMessage().split(" from ")[1].split(":")[0] for record in caplog.records
                 if "failed authentication" in record.getMessage()}
    assert addresses == {"198.51.100.7", "127.0.0.2"}, addresses


def cookie_attributes(headers: Any) -> set[str]:
    return {part.strip().split("=")[0].lower() for part in headers["Set-Cookie"].split(";")[1:]}


# (settings, source address, X-Forwarded-Proto sent, whether the cookie must be Secure)
COOKIE_CASES: list[tuple[dict[str, Any], str, str | None, bool]] = [
    ({"trusted_proxies": ["127.0.0.1"]}, "127.0.0.1", "https", True),   # the proxy terminated TLS
    ({"cookie_secure": True}, "127.0.0.1", None, True),                 # a proxy that says nothing
    ({"trusted_proxies": ["127.0.0.1"]}, "127.0.0.1", "http", False),
    ({"trusted_proxies": ["127.0.0.1"]}, "127.0.0.2", "https", False),  # said by a client, not the proxy
    ({}, "127.0.0.1", "https", False),                                  # no proxy is trusted
    ({}, "127.0.0.1", None, False),
]


def test_the_session_cookie_is_secure_behind_a_tls_proxy(tmp_path: Path) -> None:
    for number, (settings, source, forwarded_proto, secure) in enumerate(COOKIE_CASES):
        async def scenario(port: int, source: str = source, forwarded_proto: str | None = forwarded_proto,
                           secure: bool = secure) -> None:
            headers = {"X-Forwarded-Proto": forwarded_proto} if forwarded_proto else {}
            status, answer = await call(port, "POST", "/api/session", source, headers, {"token": TOKEN})
            assert status == 200
            attributes = cookie_attributes(answer)
            assert {"httponly", "samesite", "path", "max-age"} <= attributes, attributes
            assert ("secure" in attributes) == secure, (source, forwarded_proto, answer["Set-Cookie"])

        case = tmp_path / str(number)
        case.mkdir()
        against_app(case, scenario, **settings)
