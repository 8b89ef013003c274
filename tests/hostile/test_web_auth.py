"""Who may read and write through the daemon's HTTP endpoint (reads, DNS
rebinding, dashboard sessions).

* Reads used to be open when `listen` was a loopback address: any local user (`nobody`) read
  the deploy logs the state dir keeps 0600 through /api/sites/D/deployments/N/log, and the
  metrics, snapshots and history too. Now every read needs the token (or a dashboard session),
  loopback or not, and without `api_token` nothing is readable.
* The Host header was not looked at: a web page whose name re-resolves to 127.0.0.1 (DNS
  rebinding) was, to the browser, same-origin with the endpoint. Now a request whose Host is
  not the `listen` address (or a loopback name of it, or one of `http_hosts`) is refused with
  421 before any handler runs.
* The dashboard signs in: POST /api/session sets an HttpOnly, SameSite=Strict session cookie
  that dies with its token (SIGHUP rotation), after 12 hours, or at DELETE /api/session; a
  cookie-authenticated write needs a same-origin Origin.

The daemon tests marked "fails on e49cf4c" run against another checkout with
RECONCILER_UNDER_TEST=/tmp/oldmain (tests/support/process.py), where they fail; the others
drive the real aiohttp application in this process (aiohttp's TestServer, a real socket).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import json
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from reconciler.config import Settings, token_digest
from reconciler.engine.converge import ssh_options
from reconciler.engine.store import Store
from reconciler.remote.transport.pool import TransportPool
from reconciler.service.http.app import SESSIONS, build_app
from reconciler.service.http.context import WebContext
from reconciler.service.http.security import SESSION_COOKIE, SESSION_TTL, Sessions, host_allowed, listen_authorities
from reconciler.service.metrics import PassStats
from tests.support import Daemons, World, free_port
from tests.support.process import ROOT, check_code_under_test, code_under_test

DOMAIN = "shop.example.com"
TOKEN = "api-token-for-tests"
SECRET = "webhook-secret-for-tests"
MARKER = "build-output-only-the-operator-may-read"
READS = ("/api/sites", f"/api/sites/{DOMAIN}/deployments", "/api/events", "/metrics")


def old_code() -> bool:
    return code_under_test() != ROOT


def daemon_world(tmp_path: Path, daemons: Daemons, port: int, **config: Any) -> World:
    """A world whose daemon listens on 127.0.0.1:`port` with `api_token` and `webhook_secret`
    (and runs the checkout RECONCILER_UNDER_TEST names)."""
    values = {"interval": 3600, "listen": f"127.0.0.1:{port}", "api_token": TOKEN, "webhook_secret": SECRET,
              "allow_local": None if old_code() else True, **config}
    world = World.create(tmp_path, daemons=daemons, domain=DOMAIN, **values)
    if old_code():
        world.launcher.source = check_code_under_test()
    return world


def fetch(port: int, method: str, path: str, headers: dict[str, str] | None = None,
          body: bytes | None = None) -> tuple[int, str]:
    """(status, body text) of one request to 127.0.0.1:`port`; an event stream's body is not
    read (its head is the answer)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        if response.getheader("Content-Type", "").startswith("text/event-stream"):
            return response.status, ""
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def raw_status(port: int, request: bytes) -> int:
    """Send `request` as raw bytes (any Host header, or none, or two); the response status."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(request)
        head = b""
        while b"\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    return int(head.split(b" ", 2)[1])


# --- reads need the token, on loopback too (fails on e49cf4c) -------------------------------------------


def test_every_read_needs_the_token_on_loopback(tmp_path: Path, daemons: Daemons) -> None:
    """Listening on 127.0.0.1, a client without the token (any local user) reads nothing: not
    the deployment log (0600 in the state dir), not the sites, history, snapshots or metrics."""
    port = free_port()
    world = daemon_world(tmp_path, daemons, port)
    world.declare(DOMAIN, script=f"echo {MARKER}\n")
    daemon = world.start_daemon()
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def deployed() -> int | None:
        assert daemon.alive(), daemon.tail()
        status, text = fetch(port, "GET", f"/api/sites/{DOMAIN}/deployments", auth)
        rows = json.loads(text) if status == 200 else []
        done = [row for row in rows if row["status"] == "success"]
        return done[0]["id"] if done else None

    ident = world.wait(deployed, "the first deployment to succeed")
    log = f"/api/sites/{DOMAIN}/deployments/{ident}/log"
    for path in (log, *READS):
        for method in ("GET", "HEAD"):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                            {"Cookie": f"{SESSION_COOKIE}={'x' * 43}"}):
                status, text = fetch(port, method, path, headers)
                assert status == 401, (method, path, headers, status, text[:200])
                assert MARKER not in text and DOMAIN not in text, (method, path, text[:200])
    # With the token, all of it; the log holds what the script printed.
    for path in (log, *READS):
        assert fetch(port, "GET", path, auth)[0] == 200, path
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    conn.request("GET", log, headers=auth)
    assert MARKER in conn.getresponse().read().decode()
    conn.close()
    # The page holds no data and stays open; it says nothing about the sites.
    status, page = fetch(port, "GET", "/")
    assert status == 200 and "<title>reconciler</title>" in page and DOMAIN not in page
    assert daemon.alive(), daemon.tail()


def test_without_api_token_nothing_is_readable(tmp_path: Path) -> None:
    """No api_token: every read and write is 403 with an error telling the operator to set it
    (a session cannot be made either); the page still loads, to say so."""

    async def scenario(client: TestClient[Any, Any], endpoint: Endpoint) -> None:
        for path in (*READS, f"/api/sites/{DOMAIN}/deployments/1/log"):
            for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer None"}):
                response = await client.get(path, headers=headers)
                body = await response.json()
                assert response.status == 403 and "api_token" in body["error"], (path, headers, body)
        response = await client.post("/api/session", json={"token": ""})
        assert response.status == 403 and "api_token" in (await response.json())["error"]
        response = await client.post(f"/api/sites/{DOMAIN}/rollback", json={}, headers={"Authorization": "Bearer "})
        assert response.status == 403
        response = await client.get("/")
        assert response.status == 200

    against_app(tmp_path, scenario)


# --- the Host header (fails on e49cf4c) -------------------------------------------------------------------


def request_bytes(method: str, path: str, host_lines: list[str], extra: dict[str, str] | None = None,
                  body: bytes = b"", version: str = "HTTP/1.1") -> bytes:
    lines = [f"{method} {path} {version}", *host_lines, *(f"{k}: {v}" for k, v in (extra or {}).items()),
             f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode() + body


def test_foreign_host_headers_are_refused_before_any_handler(tmp_path: Path, daemons: Daemons) -> None:
    """DNS rebinding: a page at http://rebind.attacker.example:PORT whose name now resolves to
    127.0.0.1 is same-origin with the endpoint for the browser, and its requests carry its own
    name in Host. Every such request is 421, whatever it is: the page, a read with the right
    token, a signed webhook, a rollback."""
    port = free_port()
    world = daemon_world(tmp_path, daemons, port)
    daemon = world.start_daemon()
    body = json.dumps({"repository": {"clone_url": "https://example.com/nobody/nothing.git"}}).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    requests = {
        "page": ("GET", "/", {}, b""),
        "read": ("GET", "/api/sites", {"Authorization": f"Bearer {TOKEN}"}, b""),
        "hook": ("POST", "/hooks/git", {"X-Hub-Signature-256": signature, "Content-Type": "application/json"}, body),
        "rollback": ("POST", f"/api/sites/{DOMAIN}/rollback",
                     {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}, b"{}"),
    }

    def answering() -> bool:
        assert daemon.alive(), daemon.tail()
        try:
            return raw_status(port, request_bytes("GET", "/", [f"Host: 127.0.0.1:{port}"])) == 200
        except OSError:
            return False

    world.wait(answering, "the daemon's HTTP endpoint")
    foreign = [[f"Host: rebind.attacker.example:{port}"], ["Host: rebind.attacker.example"],
               [f"Host: 127.0.0.1.attacker.example:{port}"], [f"Host: 127.0.0.2:{port}"],
               [f"Host: 127.0.0.1:{port + 1 if port < 65535 else port - 1}"], ["Host: "],
               [f"Host: localhost.:{port}"], [f"Host: 127.0.0.1:{port}", "Host: rebind.attacker.example"]]
    for host_lines in foreign:
        for what, (method, path, headers, payload) in requests.items():
            status = raw_status(port, request_bytes(method, path, host_lines, headers, payload))
            assert status in (400, 421), (what, host_lines, status)  # 400: aiohttp's own parser refused it
            if len(host_lines) == 1:
                assert status == 421, (what, host_lines, status)
    # No Host at all (HTTP/1.0 allows that): refused too.
    assert raw_status(port, request_bytes("GET", "/", [], version="HTTP/1.0")) == 421
    # The endpoint's own names: the listen address, and loopback names of it.
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
        status = raw_status(port, request_bytes("GET", "/", [f"Host: {host}"]))
        assert status == 200, (host, status)
        status = raw_status(port, request_bytes("GET", "/api/sites", [f"Host: {host}"],
                                                {"Authorization": f"Bearer {TOKEN}"}))
        assert status == 200, (host, status)
    assert daemon.alive(), daemon.tail()


@pytest.mark.parametrize(("listen", "allowed", "refused"), [
    ("127.0.0.1:9180",
     ["127.0.0.1:9180", "localhost:9180", "LocalHost:9180", "[::1]:9180", "[0:0:0:0:0:0:0:1]:9180"],
     ["127.0.0.1", "127.0.0.1:9181", "127.0.0.2:9180", "localhost", "::1:9180", "[::2]:9180", "x:9180",
      "127.0.0.1:9180:1", "127.0.0.1:+9180", "127.0.0.1:\uff19\uff11\uff18\uff10", "", " ", "[::1", "[::1]x"]),
    ("[::1]:9180", ["[::1]:9180", "[0::1]:9180", "localhost:9180", "127.0.0.1:9180"], ["::1:9180", "[::1]:80"]),
    ("0.0.0.0:9180", ["0.0.0.0:9180", "127.0.0.1:9180", "localhost:9180", "[::1]:9180"],
     ["10.1.2.3:9180", "deploy.example.com:9180"]),
    ("192.0.2.10:80", ["192.0.2.10", "192.0.2.10:80"], ["localhost:80", "127.0.0.1:80", "192.0.2.10:8080"]),
    ("localhost:9180", ["localhost:9180", "127.0.0.1:9180"], ["localhost:9181"]),
])
def test_host_names_of_the_listen_address(listen: str, allowed: list[str], refused: list[str]) -> None:
    names = listen_authorities(listen)
    for host in allowed:
        assert host_allowed(host, names, []), (listen, host)
    for host in refused:
        assert not host_allowed(host, names, []), (listen, host)


def test_http_hosts_entries() -> None:
    """"name" allows the name on any port (a reverse proxy's), "name:port" that port only (or no
    port when it is 80 or 443, as browsers send the default port); IPv6 bracketed."""
    entries = ["deploy.example.com", "alt.example.com:8443", "tls.example.com:443", "[2001:db8::1]:9000"]
    names = listen_authorities("127.0.0.1:9180")
    for host in ("deploy.example.com", "Deploy.Example.com:443", "deploy.example.com:9180", "alt.example.com:8443",
                 "tls.example.com", "tls.example.com:443", "[2001:db8::1]:9000", "[2001:db8:0:0:0:0:0:1]:9000"):
        assert host_allowed(host, names, entries), host
    for host in ("alt.example.com", "alt.example.com:9999", "tls.example.com:8443", "evil.deploy.example.com",
                 "deploy.example.com.evil", "deploy.example.com:x", "[2001:db8::2]:9000", "2001:db8::1:9000"):
        assert not host_allowed(host, names, entries), host
    assert not host_allowed("deploy.example.com", set(), ["", "[bad", "a:b:c"])


def test_http_hosts_apply_per_request(tmp_path: Path) -> None:
    """The middleware refuses before any handler (421, naming http_hosts) and reads http_hosts on
    each request: a SIGHUP that adds a name applies to the next request."""

    async def scenario(client: TestClient[Any, Any], endpoint: Endpoint) -> None:
        async def status(host: str, path: str = "/api/sites") -> int:
            reader, writer = await asyncio.open_connection(client.host, client.port)
            try:
                writer.write(request_bytes("GET", path, [f"Host: {host}"], {"Authorization": f"Bearer {TOKEN}"}))
                await writer.drain()
                return int((await reader.readline()).split()[1])
            finally:
                writer.close()

        assert await status(f"127.0.0.1:{client.port}") == 200
        assert await status("deploy.example.com") == 421
        response = await client.get("/", headers={"Host": "deploy.example.com"})
        assert response.status == 421 and "http_hosts" in (await response.json())["error"]
        endpoint.update(http_hosts=["deploy.example.com"])
        assert await status("deploy.example.com") == 200
        assert await status("deploy.example.com:8443", "/") == 200
        assert await status("other.example.com") == 421

    against_app(tmp_path, scenario, api_token=TOKEN)


# --- dashboard sessions -------------------------------------------------------------------------------


def set_cookie(response: aiohttp.ClientResponse) -> dict[str, str]:
    """The session's Set-Cookie as {"value": ..., attribute (lowercased): value or ""}."""
    headers = response.headers.getall("Set-Cookie", [])
    assert len(headers) == 1, headers
    first, *attributes = [part.strip() for part in headers[0].split(";")]
    name, _, value = first.partition("=")
    assert name == SESSION_COOKIE, headers
    parsed = {"value": value}
    for attribute in attributes:
        key, _, attr_value = attribute.partition("=")
        parsed[key.lower()] = attr_value
    return parsed


def test_session_cookie_attributes_and_same_origin_writes(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], endpoint: Endpoint) -> None:
        own = f"http://127.0.0.1:{client.port}"
        response = await client.post("/api/session", json={"token": "wrong"})
        assert response.status == 401 and "Set-Cookie" not in response.headers
        for body in (b"not json", b'{"token": 42}', b"[]"):
            response = await client.post("/api/session", data=body, headers={"Content-Type": "application/json"})
            assert response.status in (400, 401) and "Set-Cookie" not in response.headers, body
        response = await client.post("/api/session", json={"token": TOKEN}, headers={"Origin": "http://evil.example"})
        assert response.status == 403 and "Set-Cookie" not in response.headers

        response = await client.post("/api/session", json={"token": TOKEN}, headers={"Origin": own})
        assert response.status == 200, await response.text()
        cookie = set_cookie(response)
        assert "httponly" in cookie and cookie.get("samesite") == "Strict" and cookie.get("path") == "/", cookie
        assert cookie.get("max-age") == str(int(SESSION_TTL)) == "43200", cookie
        value = cookie["value"]
        assert len(value) >= 43 and TOKEN not in value and set(value) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), value
        again = set_cookie(await client.post("/api/session", json={"token": TOKEN}))["value"]
        assert again != value, "two sessions, one cookie value"
        with_cookie = {"Cookie": f"{SESSION_COOKIE}={value}"}

        for path in READS:
            response = await client.get(path, headers=with_cookie)
            # 404: past authentication, the site is unknown to this app
            assert response.status == (404 if "/deployments" in path else 200), (path, response.status)
            response.close()
        response = await client.get("/api/sites", headers={"Cookie": f"{SESSION_COOKIE}={value[:-1]}x"})
        assert response.status == 401

        # A write on the cookie needs no Origin or this endpoint's; the bearer token is not ambient.
        rollback = f"/api/sites/{DOMAIN}/rollback"
        for origin in ("http://evil.example", "null", f"{own}.evil.example", f"http://evil.example/{own}",
                       "file://", f"{own}/path"):
            response = await client.post(rollback, json={}, headers={**with_cookie, "Origin": origin})
            assert response.status == 403, (origin, response.status, await response.text())
        for headers in (with_cookie, {**with_cookie, "Origin": own},
                        {"Authorization": f"Bearer {TOKEN}", "Origin": "http://evil.example"}):
            response = await client.post(rollback, json={}, headers=headers)
            assert response.status == 404, (headers, response.status, await response.text())  # past auth: no such site
        response = await client.post(rollback, json={})
        assert response.status == 401

        # Signing out: refused cross-origin; then the session is gone on the server.
        response = await client.delete("/api/session", headers={**with_cookie, "Origin": "http://evil.example"})
        assert response.status == 403
        assert (await client.get("/api/sites", headers=with_cookie)).status == 200
        response = await client.delete("/api/session", headers={**with_cookie, "Origin": own})
        cleared = set_cookie(response)
        assert response.status == 200 and cleared["value"] in ("", '""') and cleared.get("max-age") == "0", cleared
        assert (await client.get("/api/sites", headers=with_cookie)).status == 401
        assert (await client.get("/api/sites", headers={"Cookie": f"{SESSION_COOKIE}={again}"})).status == 200

    against_app(tmp_path, scenario, api_token=TOKEN, world=True)


def test_session_ends_when_the_token_changes_or_it_expires(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], endpoint: Endpoint) -> None:
        async def login() -> dict[str, str]:
            response = await client.post("/api/session", json={"token": endpoint.settings.api_token})
            assert response.status == 200
            return {"Cookie": f"{SESSION_COOKIE}={set_cookie(response)['value']}"}

        async def status(headers: dict[str, str]) -> int:
            return (await client.get("/api/sites", headers=headers)).status

        first, second = await login(), await login()
        stream = await client.get("/api/events", headers=first)
        assert stream.status == 200
        assert (await stream.content.readline()).startswith(b"event: snapshot")

        endpoint.update(api_token="rotated-token")  # what a SIGHUP with a new token does
        assert await status(first) == 401
        # The open stream ends too (it checks its authentication on every poll).
        rest = await asyncio.wait_for(stream.content.read(), timeout=15)
        assert b"event: snapshot" not in rest, rest
        endpoint.update(api_token=TOKEN)  # and back: no session made under it revives
        assert await status(first) == 401 and await status(second) == 401
        assert await status({"Authorization": f"Bearer {TOKEN}"}) == 200

        # Twelve hours later (the clock the sessions read), a session is over.
        third = await login()
        assert await status(third) == 200
        sessions = endpoint.app[SESSIONS]
        later = sessions.clock() + SESSION_TTL + 1
        sessions.clock = lambda: later
        assert await status(third) == 401

    against_app(tmp_path, scenario, api_token=TOKEN)


def test_sighup_ends_sessions_made_with_the_old_token(tmp_path: Path, daemons: Daemons) -> None:
    """The real daemon: a dashboard session made under the old token is refused once a SIGHUP
    has loaded a new one, and its open event stream ends."""
    port = free_port()
    world = daemon_world(tmp_path, daemons, port, api_token="old-token")
    daemon = world.start_daemon()

    def answering() -> bool:
        assert daemon.alive(), daemon.tail()
        try:
            return fetch(port, "GET", "/api/sites", {"Authorization": "Bearer old-token"})[0] == 200
        except OSError:
            return False

    world.wait(answering, "the daemon's HTTP endpoint")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    conn.request("POST", "/api/session", body=json.dumps({"token": "old-token"}),
                 headers={"Content-Type": "application/json", "Origin": f"http://127.0.0.1:{port}"})
    response = conn.getresponse()
    assert response.status == 200, response.read()
    response.read()
    set_cookie_header = response.getheader("Set-Cookie", "")
    conn.close()
    assert "HttpOnly" in set_cookie_header and "SameSite=Strict" in set_cookie_header, set_cookie_header
    cookie = {"Cookie": set_cookie_header.split(";", 1)[0]}
    assert fetch(port, "GET", "/api/sites", cookie)[0] == 200

    events = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    events.request("GET", "/api/events", headers=cookie)
    stream = events.getresponse()
    assert stream.status == 200 and stream.readline().startswith(b"event: snapshot")

    world.write_config(interval=3600, listen=f"127.0.0.1:{port}", api_token="new-token", webhook_secret=SECRET)
    daemon.signal(signal.SIGHUP)
    world.wait(lambda: fetch(port, "GET", "/api/sites", {"Authorization": "Bearer new-token"})[0] == 200,
               "the new token to be accepted after SIGHUP", timeout=15)
    assert fetch(port, "GET", "/api/sites", cookie)[0] == 401
    stream.read()  # the server ends the stream: read() returns (a stream left open would time out)
    events.close()
    assert daemon.alive(), daemon.tail()


def test_sessions_are_bounded() -> None:
    """Only a valid token makes a session, and at most MAX_SESSIONS live (the oldest goes)."""
    now = [0.0]
    sessions = Sessions(ttl=100.0, limit=3, clock=lambda: now[0])
    tokens = {token_digest(TOKEN): "api"}
    made = [sessions.create(tokens, token_digest(TOKEN)) for _ in range(4)]
    assert len(sessions) == 3
    assert not sessions.valid(made[0], tokens)
    assert all(sessions.valid(value, tokens) for value in made[1:])
    now[0] = 100.0
    assert not sessions.valid(made[1], tokens)
    assert not sessions.valid(made[2], {}) and len(sessions) == 0


# --- the in-process harness ------------------------------------------------------------------------------


class Endpoint:
    """The app under test and its settings, which `update` replaces as a SIGHUP would."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app: Any = None

    def update(self, **changes: Any) -> None:
        self.settings = self.settings.model_copy(update=changes)


Scenario = Callable[[TestClient[Any, Any], Endpoint], Awaitable[None]]


def against_app(tmp_path: Path, scenario: Scenario, world: bool = False, **settings: Any) -> None:
    """`scenario(client, endpoint)` against the real app listening on 127.0.0.1 (its `listen`);
    with `world`, on a real declarations repository (for rollbacks)."""
    port = free_port()
    repo = World.create(tmp_path, domain=DOMAIN).decl if world else tmp_path
    endpoint = Endpoint(Settings(repo=repo, state_dir=tmp_path / "state", listen=f"127.0.0.1:{port}", **settings))
    decls: Any = SimpleNamespace(sites={}, invalid={})

    async def go() -> None:
        store = Store(endpoint.settings.db_path)
        ctx = WebContext(lambda: endpoint.settings, store, TransportPool(ssh_options(endpoint.settings)),
                         PassStats(), lambda: decls, lambda domains: None, asyncio.Event())
        endpoint.app = build_app(ctx)
        # No cookie jar: every cookie a test sends is one it means to send.
        client = TestClient(TestServer(endpoint.app, host="127.0.0.1", port=port), cookie_jar=aiohttp.DummyCookieJar())
        await client.start_server()
        try:
            await scenario(client, endpoint)
        finally:
            await client.close()
            store.close()

    asyncio.run(go())



def test_no_path_spelling_reaches_a_read_without_the_token(tmp_path: Path) -> None:
    """Dot segments, encodings, doubled slashes, case: whatever the router makes of a path, the
    open paths are exact, so no spelling of a read answers without the token."""
    spellings = ["/hooks/../api/sites", "/hooks/git/../../api/sites", "/hooks/%2E%2E/api/sites", "/%61pi/sites",
                 "//api/sites", "/api//sites", "/api/sites/", "/API/sites", "/./api/sites", "/api/sites?x=/hooks/git",
                 "/hooks/git/../../metrics", "/metrics/", "/api/session/../sites", "/api/events#/"]

    async def scenario(client: TestClient[Any, Any], endpoint: Endpoint) -> None:
        for path in spellings:
            reader, writer = await asyncio.open_connection(client.host, client.port)
            try:
                writer.write(request_bytes("GET", path, [f"Host: 127.0.0.1:{client.port}"]))
                await writer.drain()
                status = int((await reader.readline()).split()[1])
            finally:
                writer.close()
            assert status in (400, 401, 404), (path, status)

    against_app(tmp_path, scenario, api_token=TOKEN)
