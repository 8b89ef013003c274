"""service/http/security.py: who may ask what of the HTTP endpoint. Units of its parts (the
dashboard's `Sessions` on an injected clock, which secret a request tries for the throttle, when
the cookie is Secure, the names of the `listen` address) and the `Guard`'s checks on the real
app in this process (tests/support/inprocess_app.py). The hostile views (foreign Host headers,
every read without the token, cookie attributes, token rotation, throttled guessing) are in
tests/hostile/test_web_auth.py and test_api_guessing.py."""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from aiohttp.test_utils import TestClient, make_mocked_request

from reconciler.config import ApiToken, Settings, token_digest
from reconciler.service.http.app import SESSIONS
from reconciler.service.http.security import (
    LOOPBACK_NAMES,
    SESSION_COOKIE,
    Sessions,
    cookie_secure,
    credential,
    host_allowed,
    listen_authorities,
    token_named,
)
from tests.support.inprocess_app import Endpoint, against_app

TOKEN = "api-token-for-tests"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# --- Sessions -----------------------------------------------------------------------------------------


# The configured tokens as the endpoint holds them: SHA-256 -> name.
KEY = token_digest(TOKEN)
TOKENS = {KEY: "api"}


def test_a_session_is_valid_for_its_token_until_signed_out() -> None:
    sessions = Sessions(clock=Clock())
    first, second = sessions.create(TOKENS, KEY), sessions.create(TOKENS, KEY)
    assert first != second and TOKEN not in first
    assert sessions.valid(first, TOKENS) == sessions.valid(second, TOKENS) == "api"
    sessions.drop(first)
    assert sessions.valid(first, TOKENS) is None and sessions.valid(second, TOKENS) == "api", \
        "sign-out ends that session only"
    sessions.drop("never-made")  # nothing to end: no error
    assert len(sessions) == 1


def test_another_token_ends_every_session_and_the_old_one_revives_none() -> None:
    sessions = Sessions(clock=Clock())
    made = [sessions.create(TOKENS, KEY) for _ in range(3)]
    sessions.observe({token_digest("rotated-token"): "api"})
    assert len(sessions) == 0
    assert not any(sessions.valid(value, TOKENS) for value in made)


def test_a_session_lives_while_its_own_named_token_does() -> None:
    """Sessions of other tokens survive a token added or removed; a session ends when its own
    token is removed or renamed, and configuring it again revives none."""
    alice, bob = token_digest("alice-token-0123456789"), token_digest("bob-token-0123456789")
    both = {alice: "alice", bob: "bob"}
    sessions = Sessions(clock=Clock())
    of_alice, of_bob = sessions.create(both, alice), sessions.create(both, bob)
    assert (sessions.valid(of_alice, both), sessions.valid(of_bob, both)) == ("alice", "bob")
    assert sessions.valid(of_alice, {alice: "alice"}) == "alice" and len(sessions) == 1, "bob's ends, alice's not"
    assert sessions.valid(of_bob, both) is None
    assert sessions.valid(of_alice, {alice: "mallory"}) is None, "a renamed token is not who signed in"
    assert sessions.valid(of_alice, both) is None


def test_expired_sessions_are_forgotten_when_a_session_is_made() -> None:
    clock = Clock()
    sessions = Sessions(ttl=10.0, limit=3, clock=clock)
    stale = [sessions.create(TOKENS, KEY), sessions.create(TOKENS, KEY)]
    clock.now = 5.0
    live = sessions.create(TOKENS, KEY)
    clock.now = 12.0  # both `stale` are over, `live` has 3 s left
    newest = sessions.create(TOKENS, KEY)
    assert len(sessions) == 2, "the memory holds live sessions only"
    assert sessions.valid(live, TOKENS) and sessions.valid(newest, TOKENS)
    assert not any(sessions.valid(value, TOKENS) for value in stale)


def test_a_cookie_value_with_undecodable_bytes_is_no_session() -> None:
    sessions = Sessions(clock=Clock())
    sessions.create(TOKENS, KEY)
    assert sessions.valid(b"\xff\xfe".decode("utf-8", "surrogateescape"), TOKENS) is None
    assert len(sessions) == 1


def test_a_token_is_found_among_many_by_its_digest() -> None:
    tokens = {token_digest("alice-token"): "alice", token_digest("bob-token"): "bob"}
    assert token_named(tokens, "bob-token") == (token_digest("bob-token"), "bob")
    assert token_named(tokens, "bob-toke") is None and token_named(tokens, "") is None
    assert token_named(tokens, b"\xff".decode("utf-8", "surrogateescape")) is None


# --- which secret a request tries, when the cookie is Secure, the names of `listen` -----------------------


def mocked(method: str, path: str, headers: dict[str, str] | None = None, peer: str = "203.0.113.9",
           secure: bool = False) -> Any:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: {"peername": (peer, 51234)}.get(name, default)
    return make_mocked_request(method, path, headers=headers or {}, transport=transport,
                               sslcontext=ssl.create_default_context() if secure else None)


SIGNED = {"X-Hub-Signature-256": "sha256=00"}
GITLAB = {"X-Gitlab-Token": "secret"}


@pytest.mark.parametrize(("method", "path", "headers", "settings", "tries"), [
    ("GET", "/api/sites", BEARER, {}, "api_token"),
    ("GET", "/api/sites", {}, {}, None),
    ("GET", "/api/sites", {"Cookie": f"{SESSION_COOKIE}=x"}, {}, None),
    ("GET", "/", BEARER, {}, None),
    ("POST", "/api/session", {}, {}, "api_token"),
    ("DELETE", "/api/session", BEARER, {}, None),
    ("POST", "/hooks/git", SIGNED, {"webhook_secret": "s"}, "webhook_secret"),
    ("POST", "/hooks/git", SIGNED, {}, None),
    ("POST", "/hooks/git", {}, {"webhook_secret": "s"}, None),
    ("POST", "/hooks/git", GITLAB, {"webhook_secret": "s"}, None),
    ("POST", "/hooks/git", GITLAB, {"webhook_secret": "s", "webhook_gitlab_token": True}, "webhook_secret"),
], ids=["bearer-read", "bare-read", "cookie-read", "page", "sign-in", "sign-out", "signed-hook", "hook-no-secret",
        "unsigned-hook", "gitlab-refused-anyway", "gitlab-accepted"])
def test_the_secret_a_request_tries(method: str, path: str, headers: dict[str, str], settings: dict[str, Any],
                                    tries: str | None) -> None:
    assert credential(mocked(method, path, headers), Settings(**settings)) == tries


def test_the_cookie_is_secure_over_tls_behind_a_trusted_proxy_or_when_configured() -> None:
    plain, proxied = mocked("POST", "/api/session"), mocked("POST", "/api/session", {"X-Forwarded-Proto": "https"},
                                                            peer="127.0.0.1")
    assert not cookie_secure(plain, Settings())
    assert cookie_secure(plain, Settings(cookie_secure=True))
    assert cookie_secure(mocked("POST", "/api/session", secure=True), Settings())
    assert not cookie_secure(proxied, Settings())
    assert cookie_secure(proxied, Settings(trusted_proxies=["127.0.0.1"]))


def test_the_names_of_the_listen_address() -> None:
    assert listen_authorities(None) == set() == listen_authorities("")
    assert listen_authorities("[::]:9180") == {("[::]", "9180"), *((name, "9180") for name in LOOPBACK_NAMES)}
    assert listen_authorities("Deploy.Example.com:9180") == {("deploy.example.com", "9180")}
    assert listen_authorities("[2001:db8:0::1]:80") == {("[2001:db8::1]", "80")}
    assert host_allowed("[2001:DB8::1]", listen_authorities("[2001:db8:0::1]:80"), [])


# --- the Guard on the real app -------------------------------------------------------------------------------


async def sign_in(client: TestClient[Any, Any]) -> dict[str, str]:
    response = await client.post("/api/session", json={"token": TOKEN})
    assert response.status == 200, await response.text()
    return {"Cookie": f"{SESSION_COOKIE}={response.cookies[SESSION_COOKIE].value}"}


def test_bearer_and_session_both_authenticate_and_a_401_names_the_scheme(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], endpoint: Endpoint) -> None:
        response = await client.get("/api/sites")
        assert response.status == 401 and response.headers["WWW-Authenticate"] == 'Bearer realm="reconciler"'
        assert (await client.get("/api/sites", headers={"Authorization": f"Bearer {TOKEN}x"})).status == 401
        assert (await client.get("/api/sites", headers={"Authorization": TOKEN})).status == 401
        assert (await client.get("/api/sites", headers=BEARER)).status == 200
        assert (await client.get("/api/sites", headers=await sign_in(client))).status == 200

    against_app(tmp_path, scenario, api_token=TOKEN)


def test_reads_on_a_session_need_no_origin_check_but_writes_do(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], endpoint: Endpoint) -> None:
        cookie = await sign_in(client)
        foreign = {**cookie, "Origin": "http://evil.example"}
        assert (await client.get("/api/sites", headers=foreign)).status == 200
        response = await client.post("/api/sites/shop.example.com/retry", json={}, headers=foreign)
        assert response.status == 403 and "Origin" in (await response.json())["error"]

    against_app(tmp_path, scenario, api_token=TOKEN)


def test_an_origin_naming_one_of_http_hosts_is_this_endpoint(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], endpoint: Endpoint) -> None:
        for origin in ("https://other.example.com", "https://deploy.example.com/x", "ftp://deploy.example.com",
                       "https://deploy.example.com:8443"):
            response = await client.delete("/api/session", headers={"Origin": origin})
            assert response.status == 403, origin
        for origin in ("https://deploy.example.com", "http://DEPLOY.example.com/", "https://deploy.example.com:443"):
            response = await client.delete("/api/session", headers={"Origin": origin})
            assert response.status == 200, (origin, await response.text())

    against_app(tmp_path, scenario, api_token=TOKEN, http_hosts=["deploy.example.com:443"])


def test_sign_in_without_a_body_is_a_wrong_token_and_sign_out_without_a_cookie_is_fine(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], endpoint: Endpoint) -> None:
        response = await client.post("/api/session")
        assert response.status == 401 and (await response.json()) == {"error": "wrong token"}
        response = await client.post("/api/session", json={"token": TOKEN})
        assert response.status == 200
        assert await response.json() == {"signed_in": True, "name": "api", "expires_in": 43200}
        assert endpoint.app is not None and len(endpoint.app[SESSIONS]) == 1
        response = await client.delete("/api/session")
        assert response.status == 200 and await response.json() == {"signed_in": False}
        assert len(endpoint.app[SESSIONS]) == 1, "no cookie: no session ended"

    against_app(tmp_path, scenario, api_token=TOKEN)


def test_whoami_names_the_token_a_request_acts_as(tmp_path: Path) -> None:
    """GET /api/whoami answers the name of the token used and how it was sent; unauthenticated
    it is 401 like every read. A sign-in answers the name too."""
    alice = "alice-token-0123456789"
    named = [ApiToken(name="api", sha256=hashlib.sha256(TOKEN.encode()).hexdigest()),
             ApiToken(name="alice", sha256=hashlib.sha256(alice.encode()).hexdigest())]

    async def scenario(client: TestClient[Any, Any], endpoint: Endpoint) -> None:
        assert (await client.get("/api/whoami")).status == 401
        response = await client.get("/api/whoami", headers=BEARER)
        assert (response.status, await response.json()) == (200, {"name": "api", "via": "bearer"})
        response = await client.get("/api/whoami", headers={"Authorization": f"Bearer {alice}"})
        assert (response.status, await response.json()) == (200, {"name": "alice", "via": "bearer"})
        response = await client.post("/api/session", json={"token": alice})
        assert response.status == 200 and (await response.json())["name"] == "alice"
        cookie = {"Cookie": f"{SESSION_COOKIE}={response.cookies[SESSION_COOKIE].value}"}
        response = await client.get("/api/whoami", headers=cookie)
        assert (response.status, await response.json()) == (200, {"name": "alice", "via": "session"})
        endpoint.update(api_token=named[:1])  # alice's token removed (a SIGHUP): her session is over
        assert (await client.get("/api/whoami", headers=cookie)).status == 401

    against_app(tmp_path, scenario, api_token=named)


def test_named_tokens_alone_open_the_api_and_no_token_is_logged(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """Named tokens alone open the API; a wrong one is refused (and what was tried is never
    logged)."""
    alice = "alice-token-0123456789"
    named = [ApiToken(name="ci", sha256="ab" * 32),
             ApiToken(name="alice", sha256=hashlib.sha256(alice.encode()).hexdigest())]

    async def scenario(client: TestClient[Any, Any], endpoint: Endpoint) -> None:
        assert (await client.get("/api/sites", headers={"Authorization": f"Bearer {alice}"})).status == 200
        assert (await client.get("/api/sites", headers={"Authorization": f"Bearer {alice}x"})).status == 401
        assert (await client.post("/api/session", json={"token": alice[:-1]})).status == 401

    with caplog.at_level("DEBUG"):
        against_app(tmp_path, scenario, api_token=named[1:])
    assert "failed authentication" in caplog.text and "alice-token" not in caplog.text
