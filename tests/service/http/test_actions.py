"""The operator actions over HTTP: POST /api/sites/{domain}/rollback, /unpin, /retry
and /redeploy go through `engine.actions`, exactly like the CLI.

Before, the API's rollback checked eligibility in the database only: a release removed from
the server by hand (history still lists it, `can_rollback` true) was pinned, and so was one
pinned without a signature under `require_signed`, which the daemon then never applied. Now
the server's facts decide, the refusals carry the CLI's messages with an HTTP status that says
why (404 no such site, 409 refused as asked, 400 a body that is not what was asked for), a
refused action commits nothing, and under `require_signed` without a signing key a rollback is
refused with 409 (as the threat model's "Safety" says).

Every action answers with what was done and wakes the daemon for the site, and history says
who asked: the name of the token used ("api" for the single `api_token`, a `[[api_token]]`
entry's name such as "alice"), sent as a bearer token or through a dashboard session (retry and
redeploy on the build they asked for; rollback and unpin as the pin commit's author, shown on
the switch).

The real application runs on a real socket on 127.0.0.1 (its own thread and event loop, with
the daemon's kind of context: one Reconciler on the app's store and transport pool); the
test talks plain HTTP to it and runs the passes the daemon would run in this process, so each
request's effect is seen in the next pass's history. Sites are on the local transport.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.web import AppRunner, TCPSite

from reconciler.config import ApiToken, Settings
from reconciler.engine import trust
from reconciler.engine.converge import Reconciler, ssh_options
from reconciler.engine.store import Store
from reconciler.remote.transport.pool import TransportPool
from reconciler.service.http.app import build_app
from reconciler.service.http.context import WebContext
from reconciler.service.http.security import SESSION_COOKIE
from reconciler.service.metrics import PassStats
from tests.support import World, app_commit, free_port, git, site_file

DOMAIN = "shop.example.com"
NOPE = "nope.example.com"
TOKEN = "api-token-for-tests"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
# Named tokens (`[[api_token]]`, stored as SHA-256s): the tests' own "api", and alice's.
ALICE = "alice-token-for-tests"
NAMED = [ApiToken(name="api", sha256=hashlib.sha256(TOKEN.encode()).hexdigest()),
         ApiToken(name="alice", sha256=hashlib.sha256(ALICE.encode()).hexdigest())]
ACTIONS = ("rollback", "unpin", "retry", "redeploy")


class App:
    """The real app, served as `web.serve` serves it, in a thread of its own for one test.
    `woken` lists the sites each request woke the daemon for."""

    def __init__(self, settings: Settings, daemon_asks: bool = False) -> None:
        self.port = free_port()
        # With `daemon_asks`, the daemon's ask (`Daemon.asked`) is given, as the daemon gives it:
        # the sites and whether a pin or unpin commit just landed, in `asked`.
        self.asked: list[tuple[set[str], bool]] | None = [] if daemon_asks else None
        # The single token unless the test names tokens.
        self.settings = settings.model_copy(update={"api_token": settings.api_token or TOKEN,
                                                    "listen": f"127.0.0.1:{self.port}"})
        self.woken: list[set[str]] = []
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None
        Store(self.settings.db_path).close()  # created before two connections (ours, the passes') share it
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(30), "the app did not start"
        if self._failure is not None:
            raise self._failure

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by the constructor, or by close()
            self._failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        store = Store(self.settings.db_path)
        pool = TransportPool(ssh_options(self.settings), allow_local=self.settings.allow_local)
        ctx = WebContext(lambda: self.settings, store, pool, PassStats(), lambda: None,
                         lambda domains: self.woken.append(set(domains)), asyncio.Event(),
                         Reconciler(self.settings, store, pool),
                         asked=None if self.asked is None else
                         lambda domains, landed: self.asked.append((set(domains), landed)))  # type: ignore[union-attr]
        runner = AppRunner(build_app(ctx), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            await TCPSite(runner, "127.0.0.1", self.port).start()
            self._ready.set()
            await self._stop.wait()
        finally:
            ctx.stopping.set()
            await runner.cleanup()
            await pool.close()
            store.close()

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        if self._failure is not None:
            raise self._failure

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
             raw: bytes | None = None) -> tuple[int, Any]:
        """(status, decoded JSON) of one request; HTTP errors are answers too."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.root + path, data=data, method=method,
                                         headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read() or b"null")

    def act(self, action: str, domain: str = DOMAIN, body: Any = None,
            headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """POST /api/sites/{domain}/{action} with the bearer token (unless `headers` say otherwise)."""
        return self.call("POST", f"/api/sites/{domain}/{action}", body if body is not None else {},
                         headers if headers is not None else BEARER)

    def history(self, domain: str = DOMAIN) -> list[dict[str, Any]]:
        status, body = self.call("GET", f"/api/sites/{domain}/deployments", headers=BEARER)
        assert status == 200, (status, body)
        rows: list[dict[str, Any]] = body
        return rows

    def session(self, token: str = TOKEN) -> dict[str, str]:
        """Sign in as the dashboard does: the headers of a same-origin request with the cookie."""
        request = urllib.request.Request(self.root + "/api/session", data=json.dumps({"token": token}).encode(),
                                         method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=15) as response:
            cookie = response.headers["Set-Cookie"].split(";", 1)[0]
        assert cookie.startswith(f"{SESSION_COOKIE}="), cookie
        return {"Cookie": cookie, "Origin": self.root}


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World.create(tmp_path, domain=DOMAIN)


@pytest.fixture
def apps() -> Iterator[list[App]]:
    started: list[App] = []
    yield started
    for app in started:
        app.close()


def serve(apps: list[App], settings: Settings, daemon_asks: bool = False) -> App:
    app = App(settings, daemon_asks)
    apps.append(app)
    return app


def deploy(world: World, message: str | None = None, **settings: Any) -> str:
    """A new app commit (unless `message` is None) and one pass; the live release."""
    if message is not None:
        app_commit(world.app, message)
    world.reconcile_in_process(**settings)
    active = world.active()
    assert active is not None
    return active


def pin_of(world: World) -> str | None:
    text = git(world.decl, "show", f"main:sites.d/{DOMAIN}.toml")
    return next((line.split("=", 1)[1].strip().strip('"') for line in text.splitlines()
                 if line.startswith("pin")), None)


# --- rollback ---------------------------------------------------------------------------------------


def test_rollback_refusals_come_from_the_server_and_commit_nothing(world: World, apps: list[App]) -> None:
    world.declare(script="test ! -e BROKEN || { echo 'the build is broken'; exit 3; }\n")
    first = deploy(world)
    second = deploy(world, "v2")
    third = deploy(world, "v3")
    # A failed build: its release stays on the server, not successful; the third stays live.
    app_commit(world.app, "break the build", {"BROKEN": ""})
    assert deploy(world) == third
    failed = next(row["release"] for row in world_history(world) if row["status"] == "failed")
    assert failed in world.releases()
    app = serve(apps, world.settings())
    tip = world.tip()

    # The release that is already active: pinning it would only freeze the site.
    status, body = app.act("rollback", body={"release": third})
    assert status == 409 and "already the active release" in body["error"], (status, body)
    # Removed from the server by hand: history still offers it (the database does not know)...
    shutil.rmtree(world.deployments() / first)
    row = next(row for row in app.history() if row["release"] == first)
    assert row["can_rollback"], row
    # ...but the server is asked, and it is gone.
    status, body = app.act("rollback", body={"release": first})
    assert status == 409 and f"release {first} is not on local" in body["error"], (status, body)
    status, body = app.act("rollback", body={"release": failed})
    assert status == 409 and "not a successful build" in body["error"], (status, body)
    status, body = app.act("rollback", body={"release": "01012020-000000"})
    assert status == 409 and "not on local" in body["error"], (status, body)
    status, body = app.act("rollback", body={"release": "not-a-release"})
    assert status == 409 and "not a release name" in body["error"], (status, body)
    # Bodies that are not what was asked for: 400, never "the previous release" by accident.
    for raw in (b'{"release": 42}', b"[]", b"not json", b'"01012020-000000"'):
        status, body = app.call("POST", f"/api/sites/{DOMAIN}/rollback", raw=raw, headers=BEARER)
        assert status == 400 and "error" in body, (raw, status, body)
    assert world.tip() == tip and pin_of(world) is None, "a refused rollback committed something"
    assert app.woken == [], "a refused action woke the daemon"

    # The one eligible release: committed, and the daemon woken for the site.
    status, body = app.act("rollback", body={"release": second})
    assert status == 200, (status, body)
    assert body == {"domain": DOMAIN, "action": "rollback", "requested_by": "api", "release": second,
                    "commit": world.tip()}, body
    assert world.tip() != tip and pin_of(world) == second
    assert app.woken == [{DOMAIN}]
    assert deploy(world) == second


def world_history(world: World) -> list[dict[str, Any]]:
    rc, out, err = world.run_cli("history", DOMAIN, "--json")
    assert rc == 0, err
    rows: list[dict[str, Any]] = json.loads(out)
    return rows


def test_an_unknown_site_is_404_for_every_action(world: World, apps: list[App],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    world.declare(script="echo ok\n")
    deploy(world)
    app = serve(apps, world.settings())
    tip = world.tip()
    caplog.set_level(logging.INFO, logger="reconciler.service.http.actions")
    for action in ACTIONS:
        status, body = app.act(action, NOPE)
        assert status == 404 and f"{NOPE}: no such site declared" in body["error"], (action, status, body)
        # The domain is the URL's: a forged line in it stays inside the one log line of the refusal.
        status, body = app.act(action, "nope.example.com%0Aforged:%20INFO%20line")
        assert status == 404 and "forged" in body["error"], (action, status, body)
    assert world.tip() == tip and app.woken == []
    refusals = [r.getMessage() for r in caplog.records if "refused from the API" in r.getMessage()]
    assert len(refusals) == 2 * len(ACTIONS), refusals
    assert not [line for line in refusals if "\n" in line], refusals


def test_actions_need_authentication_like_rollback(world: World, apps: list[App]) -> None:
    world.declare(script="echo ok\n")
    deploy(world)
    app = serve(apps, world.settings())
    dashboard = app.session()
    for action in ACTIONS:
        status, _ = app.act(action, headers={})
        assert status == 401, (action, status)
        status, _ = app.act(action, headers={"Authorization": "Bearer wrong"})
        assert status == 401, (action, status)
        # A session cookie from another origin: refused before the action runs.
        status, _ = app.act(action, headers={**dashboard, "Origin": "http://evil.example"})
        assert status == 403, (action, status)
    assert app.woken == []


# --- unpin, and what a pin refuses -------------------------------------------------------------------------


def test_unpin_and_the_refusals_of_a_pinned_site(world: World, apps: list[App]) -> None:
    world.declare(script="echo ok\n")
    first = deploy(world)
    second = deploy(world, "v2")
    app = serve(apps, world.settings(api_token=NAMED))

    status, body = app.act("unpin")
    assert status == 409 and "is not pinned" in body["error"], (status, body)
    status, body = app.act("rollback")  # {}: the previous release
    assert status == 200 and body["release"] == first, (status, body)
    assert git(world.decl, "log", "-1", "--format=%an|%cn", "main") == "api|reconciler"  # who asked
    assert deploy(world) == first
    switch = next(row for row in app.history() if row["release"] == first)["activations"][0]
    assert (switch["trigger"], switch["requested_by"].split(" <")[0]) == ("rollback", "api"), switch
    tip = world.tip()

    status, body = app.act("redeploy")
    assert status == 409 and f"pinned to {first}" in body["error"] and "unpin it first" in body["error"], body
    status, body = app.act("retry")
    assert status == 409 and "nothing to retry" in body["error"], (status, body)
    assert world.tip() == tip

    status, body = app.act("unpin", headers=app.session(ALICE))
    assert status == 200, (status, body)
    assert body == {"domain": DOMAIN, "action": "unpin", "requested_by": "alice", "commit": world.tip()}, body
    assert world.tip() != tip and pin_of(world) is None
    assert app.woken == [{DOMAIN}, {DOMAIN}]
    assert git(world.decl, "log", "-1", "--format=%an", "main") == "alice"
    assert deploy(world) == second  # back on its branch, without a build
    assert len(world.releases()) == 2
    switch = next(row for row in app.history() if row["release"] == second)["activations"][0]
    assert (switch["trigger"], switch["requested_by"].split(" <")[0]) == ("unpin", "alice"), switch


# --- retry and redeploy: requests, with who asked -----------------------------------------------------------


def test_retry_and_redeploy_record_who_asked(world: World, apps: list[App]) -> None:
    marker = world.tmp / "cache-warmed"
    world.declare(script=f"test -e {marker} || {{ echo 'the package mirror is down'; exit 3; }}\n")
    world.reconcile_in_process()
    assert world.active() is None
    app = serve(apps, world.settings(api_token=NAMED))
    [failed] = app.history()
    assert failed["status"] == "failed" and failed["exit_status"] == 3, failed

    # Retried while the cause is still there: it fails again, and history says who asked.
    status, body = app.act("retry")
    assert status == 200, (status, body)
    assert body == {"domain": DOMAIN, "action": "retry", "requested_by": "api", "forgotten": 1}, body
    assert app.woken == [{DOMAIN}]
    world.reconcile_in_process()
    again = app.history()[0]
    assert again["id"] != failed["id"] and again["status"] == "failed", again
    assert (again["trigger"], again["requested_by"]) == ("retry", "api"), again

    # The cause fixed, retried from the dashboard: it goes live.
    marker.touch()
    status, body = app.act("retry", headers=app.session(ALICE))
    assert status == 200 and body["requested_by"] == "alice", (status, body)
    live = deploy(world)
    row = app.history()[0]
    assert (row["release"], row["status"], row["trigger"], row["requested_by"]) == (
        live, "success", "retry", "alice"), row

    status, body = app.act("retry")
    assert status == 409 and "nothing to retry" in body["error"] and "redeploy" in body["error"], body

    # Redeploy: the same commit built again as a fresh release.
    status, body = app.act("redeploy")
    assert status == 200, (status, body)
    assert body == {"domain": DOMAIN, "action": "redeploy", "requested_by": "api"}, body
    fresh = deploy(world)
    assert fresh != live
    row = app.history()[0]
    assert (row["release"], row["trigger"], row["requested_by"], row["commit_sha"]) == (
        fresh, "redeploy", "api", world.head()), row
    assert app.woken == [{DOMAIN}] * 3  # the refused retry woke nothing


# --- require_signed ------------------------------------------------------------------------------------------


def test_rollback_under_require_signed_needs_a_signing_key(world: World, apps: list[App]) -> None:
    key = world.tmp / "signing-key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key)], check=True)
    signers = world.tmp / "allowed_signers"
    signers.write_text(f'ops@localhost namespaces="git" {Path(f"{key}.pub").read_text().strip()}\n')
    world.declare(script="echo ok\n", commit=False)
    git(world.decl, "add", "-A")
    git(world.decl, "-c", "gpg.format=ssh", "-c", f"user.signingkey={key}", "commit", "-q", "-S", "-m", "signed")
    signed = {"require_signed": "head", "allowed_signers": signers}
    first = deploy(world, **signed)
    deploy(world, "v2", **signed)
    tip = world.tip()

    app = serve(apps, world.settings(**signed))
    for action, body in (("rollback", {"release": first}), ("rollback", {})):
        status, answer = app.act(action, body=body)
        assert status == 409 and "signing_key" in answer["error"], (action, status, answer)
    assert world.tip() == tip and pin_of(world) is None, "an unsigned pin was committed"
    assert site_file(world.decl, DOMAIN).read_text().count("pin") == 0
    assert app.woken == []

    # With the key, the same request commits a pin that verifies as the daemon will verify it.
    keyed = serve(apps, world.settings(**signed, signing_key=key))
    status, answer = keyed.act("rollback", body={"release": first})
    assert status == 200, (status, answer)
    assert world.tip() == answer["commit"] != tip and pin_of(world) == first
    assert trust.verify(world.decl, answer["commit"], keyed.settings) is None
    assert deploy(world, **signed) == first


def test_the_api_tokens_configured_name_is_who_asked(world: World, apps: list[App]) -> None:
    """A pin made through the API is authored by the API token's configured name
    (`api_token_name`); the committer stays the reconciler."""
    world.declare(script="echo ok\n")
    first = deploy(world)
    deploy(world, "v2")
    app = serve(apps, world.settings(api_token_name="deploy-bot"))
    status, body = app.act("rollback")
    assert status == 200 and body["release"] == first and body["requested_by"] == "deploy-bot", (status, body)
    assert git(world.decl, "log", "-1", "--format=%an|%cn", "main") == "deploy-bot|reconciler"


def test_each_named_token_acts_as_its_name(world: World, apps: list[App]) -> None:
    """Several people, several tokens: one kept as its SHA-256, one read from an owner-only
    file. Each action, bearer or dashboard session, is recorded under the name of the token
    that made it, in history and as the pin commit's author; the single `api_token` stays
    valid, as "api"."""
    token_file = world.tmp / "bob.token"
    token_file.write_text("bob-token-from-a-file-0123\n")
    token_file.chmod(0o600)
    world.declare(script="echo ok\n")
    first = deploy(world)
    deploy(world, "v2")
    app = serve(apps, world.settings(api_token=[*NAMED, ApiToken(name="Bob Ops", token_file=token_file)]))

    status, body = app.act("rollback", headers={"Authorization": "Bearer bob-token-from-a-file-0123"})
    assert status == 200 and body["requested_by"] == "Bob Ops", (status, body)
    assert git(world.decl, "log", "-1", "--format=%an|%cn", "main") == "Bob Ops|reconciler"
    assert deploy(world) == first
    switch = next(row for row in app.history() if row["release"] == first)["activations"][0]
    assert switch["requested_by"].split(" <")[0] == "Bob Ops", switch

    status, body = app.act("unpin", headers={"Authorization": f"Bearer {ALICE}"})
    assert status == 200 and body["requested_by"] == "alice", (status, body)
    assert git(world.decl, "log", "-1", "--format=%an", "main") == "alice"
    status, body = app.act("redeploy", headers=app.session("bob-token-from-a-file-0123"))
    assert status == 200 and body["requested_by"] == "Bob Ops", (status, body)
    status, body = app.act("redeploy", headers=app.session(TOKEN))
    assert status == 200 and body["requested_by"] == "api", (status, body)
    status, body = app.act("redeploy", headers={"Authorization": "Bearer bob-token-from-a-file-012"})
    assert status == 401, (status, body)


def test_each_action_is_the_daemons_ask_and_a_pin_just_committed_says_so(world: World, apps: list[App]) -> None:
    """Given the daemon's ask, an action hands it the site (it goes now, not after a backoff) and
    says whether a pin or unpin commit just landed (the lock command switches, no probe first)."""
    world.declare(script="echo ok\n")
    first = deploy(world)
    deploy(world, "v2")
    app = serve(apps, world.settings(), daemon_asks=True)
    assert app.act("rollback")[0] == 200
    assert deploy(world) == first
    assert app.act("unpin")[0] == 200
    deploy(world)
    assert app.act("redeploy")[0] == 200
    assert app.asked == [({DOMAIN}, True), ({DOMAIN}, True), ({DOMAIN}, False)]
    assert app.woken == [], "the plain request is for an app without a daemon"
