"""The daemon's HTTP endpoint (opt-in with `listen`): /metrics, the JSON API with the SPEC
shapes, a server-sent-events stream of changes, the dashboard page, deployment logs as they
are written, the operator actions and the git push webhook.

The operator actions go through `engine.actions`, like the CLI, so they check the same facts
(one probe of the site's server), refuse the same things with the same messages and sign pin
commits under `require_signed` the same way: POST /api/sites/{domain}/rollback ({"release":
...} or {} for the previous release) and /unpin commit a pin; /retry and /redeploy are
requests recorded in the state database; who asked ("api" for the bearer token, "dashboard"
for a session) is in history's `requested_by` (for a pin, as the pin commit's author name).
Each answers 200 with what was done and wakes the daemon for that site. Refusals, nothing
done or committed: 404 for a site not declared (or invalid); 409 for everything the operator
must change first (the release is already active, gone from the server or not a successful
build, nothing to retry, a pinned site to redeploy, a site not pinned to unpin, a pin commit
that lost a race with another commit, no signing key under `require_signed`); 503 when the
site's server cannot be reached to check; 400 for a body that is not the JSON asked for.

Who may ask what (every rule is checked on each request against the current settings, so a
SIGHUP that changes `api_token`, `webhook_secret`, `webhook_gitlab_token` or `http_hosts`
applies to the next request; `listen` itself needs a restart):

* Host. A request whose Host header is not the `listen` address (`host:port`; `localhost`,
  `127.0.0.1` and `[::1]` too when listening on loopback or on every address) or one of
  `http_hosts` ("name" for any port, or "name:port") is refused with 421 before any handler
  runs, the page and the webhook included. A web page cannot make a browser send our Host
  from another name, so DNS rebinding (a hostile name re-pointed at 127.0.0.1) gets nothing.
* Reads. Everything but the page `/`, `/api/session` and `/hooks/git` needs authentication,
  loopback or not: a local user must not read deploy logs the state dir keeps owner-only.
  `/metrics` too: Prometheus sends a bearer token (`authorization` in a scrape config), and
  the metrics name every domain, server and deploy result, which is more than an anonymous
  scraper needs. Without `api_token` nothing is readable (403, saying to set it).
* Authentication. `Authorization: Bearer <api_token>` (scripts, Prometheus), or the session
  cookie of the dashboard: POST /api/session with {"token": ...} sets `reconciler_session`
  (HttpOnly, SameSite=Strict, Path=/, 12 hours), a random id kept in this process's memory
  only and bound to the token it was made with: once `api_token` changes, the session is dead.
  DELETE /api/session signs out. A cookie-authenticated request that changes something
  (the actions, sign-out) must also carry no Origin or an Origin naming this endpoint (403
  otherwise): SameSite=Strict already keeps the cookie off cross-site requests, this is the
  second lock. Event streams check their authentication on every poll and end once it fails.
* Guessing. Failed authentications are throttled per client address and per secret
  (service/throttle.py: `api_token` for the bearer header and sign-in, `webhook_secret` for
  signed deliveries): after thirty, the client's attempts are answered 429 with Retry-After,
  unchecked, for exponentially longer; each failure is logged with the client's address. A
  valid session cookie is no attempt and keeps working. Behind a reverse proxy the client is
  the proxy's X-Forwarded-For entry, and the cookie is Secure when it says X-Forwarded-Proto:
  https, only for proxies listed in `trusted_proxies` (service/forwarded.py); `cookie_secure =
  true` makes it Secure always.
* Webhooks. GitHub (X-Hub-Signature-256) and Gitea/Forgejo (X-Gitea-Signature,
  X-Forgejo-Signature) sign the body with `webhook_secret`. GitLab's X-Gitlab-Token is the
  secret itself, sent in clear on every delivery: accepted only with `webhook_gitlab_token =
  true` (else 401 saying so). An accepted delivery is remembered for an hour (at most 10,000,
  oldest forgotten first) by its delivery id (X-GitHub-Delivery, X-Gitea-Delivery,
  X-Forgejo-Delivery, X-Gogs-Delivery, GitLab's Idempotency-Key and X-Gitlab-Event-UUID) AND
  by the digest of its body: the signature covers the body only, so a replay with a fresh id
  header is still the same body. A replay is answered 200 {"duplicate": true} and triggers
  nothing. A signed delivery without any id header is accepted (older forges, hand-made
  hooks) and deduplicated by its body alone; that is logged. After the hour a replay
  triggers a poll, which only reads the declarations branch: the worst it can do is the work
  of one pass.
* Log streams notice a client that went away even while the log is silent (a keepalive each
  poll, and the connection's state is checked before every remote read): no `tail | base64`
  runs for a client that is gone.
* A client that goes away (a closed dashboard tab, a killed curl, a reset connection) is the
  normal end of an event stream: a debug line at most, never a traceback (`client_may_leave`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from reconciler.config import Settings
from reconciler.core import wire
from reconciler.core.declarations import Declarations
from reconciler.core.shard import Shard, split
from reconciler.engine import actions
from reconciler.engine.converge import Reconciler
from reconciler.engine.deploy_log import follow_log
from reconciler.engine.store import Store
from reconciler.engine.views import history_views, site_views
from reconciler.errors import ReconcilerError, TemporaryError, UnknownSite
from reconciler.remote.transport.pool import TransportPool
from reconciler.service import forwarded, throttle
from reconciler.service.metrics import PassStats, ReconcilerCollector, registry_for

log = logging.getLogger(__name__)

DASHBOARD = Path(__file__).with_name("dashboard.html")
POLL = 0.5
HEARTBEAT = 20  # polls between keepalive comments on an idle event stream
MAX_ID = 2**63 - 1  # SQLite's INTEGER: a larger id cannot exist and would overflow the query

SESSION_COOKIE = "reconciler_session"
SESSION_TTL = 12 * 3600.0
MAX_SESSIONS = 1000  # only a valid token makes one; the oldest goes first beyond this
REPLAY_WINDOW = 3600.0
MAX_DELIVERIES = 10_000
# Delivery ids: GitHub; Gitea (which also sends X-GitHub-Delivery and X-Gogs-Delivery);
# Forgejo; GitLab (Idempotency-Key: the same across retries of one event; X-Gitlab-Event-UUID).
DELIVERY_HEADERS = ("X-GitHub-Delivery", "X-Gitea-Delivery", "X-Forgejo-Delivery", "X-Gogs-Delivery",
                    "Idempotency-Key", "X-Gitlab-Event-UUID")
# Exact paths (never prefixes) that answer without the token: the page holds no data, the
# session is how one signs in, the webhook authenticates by its signature.
OPEN_PATHS = frozenset({"/", "/api/session", "/hooks/git"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
NO_TOKEN = ("api_token is not set: the HTTP API answers nothing until it is (set api_token in "
            "reconciler.toml and reload with SIGHUP)")


@dataclass
class WebContext:
    settings: Callable[[], Settings]  # the current settings: read on every request, so SIGHUP rotates secrets
    store: Store
    pool: TransportPool
    stats: PassStats
    declarations: Callable[[], Declarations | None]
    request: Callable[[set[str]], None]
    stopping: asyncio.Event
    # The daemon's, for the operator actions (rollback, unpin, retry, redeploy). None (an app
    # built without one, as some tests do): each action gets one on the current settings, the
    # store and the pool above.
    reconciler: Reconciler | None = None
    # Fetch the declarations from their Git host now (repo is a URL): a push webhook for it.
    fetch: Callable[[], None] | None = None


def _digest(*parts: bytes) -> bytes:
    return hashlib.sha256(b"\0".join(parts)).digest()


def _bytes(text: str) -> bytes:
    """Header text as bytes: aiohttp hands undecodable bytes over as surrogates."""
    return text.encode("utf-8", "surrogatepass")


class Sessions:
    """Dashboard sessions, in memory: the SHA-256 of the cookie value -> (the SHA-256 of the
    token it was made with, when it expires). A session is valid only while its token is the
    current one: the first request that sees another token ends every session (so changing
    the token back later revives none of them)."""

    def __init__(self, ttl: float = SESSION_TTL, limit: int = MAX_SESSIONS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.limit, self.clock = ttl, limit, clock
        self._live: OrderedDict[bytes, tuple[bytes, float]] = OrderedDict()
        self._token = b""  # the digest of the token the sessions were made with

    def __len__(self) -> int:
        return len(self._live)

    def observe(self, token: str | None) -> bytes:
        """The digest of `token`; every session ends if it is not the token they were made with."""
        digest = _digest(b"token", _bytes(token)) if token else b""
        if not hmac.compare_digest(digest, self._token):
            self._live.clear()
            self._token = digest
        return digest

    def create(self, token: str) -> str:
        digest = self.observe(token)
        now = self.clock()
        for key in [k for k, (_, expires) in self._live.items() if expires <= now]:
            del self._live[key]
        while len(self._live) >= self.limit:
            self._live.popitem(last=False)
        value = secrets.token_urlsafe(32)
        self._live[_digest(b"session", value.encode())] = (digest, now + self.ttl)
        return value

    def valid(self, value: str, token: str | None) -> bool:
        digest = self.observe(token)
        key = _digest(b"session", _bytes(value))
        entry = self._live.get(key)
        if entry is None:
            return False
        made_with, expires = entry
        if not token or expires <= self.clock() or not hmac.compare_digest(made_with, digest):
            del self._live[key]
            return False
        return True

    def drop(self, value: str) -> None:
        self._live.pop(_digest(b"session", _bytes(value)), None)


class Deliveries:
    """Webhook deliveries accepted in the last `window` seconds, at most `limit` keys (the oldest
    forgotten first). Keys are digests: memory per delivery is fixed whatever the headers hold."""

    def __init__(self, window: float = REPLAY_WINDOW, limit: int = MAX_DELIVERIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window, self.limit, self.clock = window, limit, clock
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now: float) -> None:
        # Every entry lives `window` seconds from its insertion: insertion order is expiry order.
        while self._seen and next(iter(self._seen.values())) <= now:
            self._seen.popitem(last=False)

    def seen(self, keys: Iterable[bytes]) -> bool:
        self._expire(self.clock())
        return any(key in self._seen for key in keys)

    def remember(self, keys: Iterable[bytes]) -> None:
        now = self.clock()
        self._expire(now)
        for key in keys:
            self._seen[key] = now + self.window
            self._seen.move_to_end(key)
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)


def delivery_keys(body: bytes, headers: Any) -> tuple[list[bytes], bool]:
    """What identifies a delivery: its id headers' values and its body; and whether it had an id."""
    ids = {_bytes(value) for name in DELIVERY_HEADERS if (value := headers.get(name, "").strip())}
    return [_digest(b"id", value) for value in sorted(ids)] + [_digest(b"body", body)], bool(ids)


SESSIONS = web.AppKey("sessions", Sessions)
DELIVERIES = web.AppKey("deliveries", Deliveries)
THROTTLES = web.AppKey("throttles", dict[str, throttle.Throttle])
SIGNATURE_HEADERS = ("X-Hub-Signature-256", "X-Gitea-Signature", "X-Forgejo-Signature", "X-Gitlab-Token")


def credential(request: web.Request, settings: Settings) -> str | None:
    """The secret `request` tries, for the throttle: "api_token" (a bearer header on a guarded
    path, or a sign-in), "webhook_secret" (a signed delivery, when there is a secret to check it
    against and its kind is accepted at all), or None. A session cookie is not guessable (a
    random 256-bit id): a request with only a cookie tries nothing."""
    if request.path == "/hooks/git":
        tries = settings.webhook_secret and any(request.headers.get(h, "") for h in SIGNATURE_HEADERS)
        refused_anyway = gitlab_token_only(request.headers) and not settings.webhook_gitlab_token
        return "webhook_secret" if tries and not refused_anyway else None
    if request.path == "/api/session":
        return "api_token" if request.method == "POST" else None
    if request.path not in OPEN_PATHS and "Authorization" in request.headers:
        return "api_token"
    return None


def cookie_secure(request: web.Request, settings: Settings) -> bool:
    """Whether the session cookie gets `Secure`: `cookie_secure`, or the client came over TLS."""
    return settings.cookie_secure or forwarded.over_tls(request, settings.trusted_proxies)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def _split_authority(value: str) -> tuple[str, str] | None:
    """(host, port) of a Host header or an http_hosts entry, lowercased, an IPv6 address in its
    bracketed compressed form; port "" when none is given. None: not a host[:port]."""
    value = value.strip().lower()
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        try:
            host = f"[{ipaddress.IPv6Address(host).compressed}]"
        except ValueError:
            return None
        port = rest[1:]
    else:
        host, _, port = value.partition(":")
        if ":" in port:
            try:  # a bare IPv6 address ("::1" in `listen`)
                host, port = f"[{ipaddress.IPv6Address(value).compressed}]", ""
            except ValueError:
                return None
    if not host or (port and not (port.isascii() and port.isdigit())):
        return None
    return host, port


def listen_authorities(listen: str | None) -> set[tuple[str, str]]:
    """The (host, port) pairs naming the `listen` address: itself, and the loopback names when it
    is a loopback or wildcard address (both answer on loopback)."""
    if not listen:
        return set()
    host, _, port = listen.rpartition(":")
    bare = host.strip("[]")
    try:
        address = ipaddress.ip_address(bare)
        name = f"[{address.compressed}]" if address.version == 6 else address.compressed
        wildcard = address.is_unspecified
    except ValueError:
        name, wildcard = bare.lower(), bare == ""
    names = {name}
    if wildcard or _loopback(bare):
        names.update(LOOPBACK_NAMES)
    return {(n, port) for n in names}


def host_allowed(value: str, listen: set[tuple[str, str]], http_hosts: Iterable[str]) -> bool:
    """Whether a Host header (or an Origin's authority) names this endpoint."""
    given = _split_authority(value)
    if given is None:
        return False
    host, port = given
    for allowed_host, allowed_port in listen:
        if host == allowed_host and (port == allowed_port or (not port and allowed_port == "80")):
            return True
    for entry in http_hosts:
        wanted = _split_authority(entry)
        if wanted is not None and host == wanted[0] and (
                not wanted[1] or port == wanted[1] or (not port and wanted[1] in ("80", "443"))):
            return True
    return False


def shard_of(ctx: WebContext) -> Shard:
    return Shard.parse(ctx.settings().shard)


def snapshot(ctx: WebContext) -> dict[str, Any]:
    sites = site_views(ctx.store, ctx.declarations(), shard_of(ctx))
    return {"sites": sites,
            "deployments": {s["domain"]: history_views(ctx.store, s["domain"])[:10] for s in sites}}


def repository_urls(payload: dict[str, Any]) -> set[str]:
    """Clone URLs named by a GitHub, GitLab or Gitea push payload."""
    urls: set[str] = set()
    for section in ("repository", "project"):
        part = payload.get(section)
        if isinstance(part, dict):
            for key in ("clone_url", "ssh_url", "git_url", "html_url", "url", "git_ssh_url", "git_http_url",
                        "http_url", "web_url"):
                if isinstance(part.get(key), str):
                    urls.add(_normal(part[key]))
    return urls


def _normal(url: str) -> str:
    return url.strip().rstrip("/").removesuffix(".git").lower()


def repository_key(url: str) -> str:
    """A repository's host and path, whatever the URL's form: `ssh://git@host:22/a/b.git`,
    `git@host:a/b.git` and `https://host/a/b` are one repository (a forge names all of them)."""
    text = _normal(url)
    _, sep, rest = text.partition("://")
    # scp-like user@host:path has no scheme: its first ':' separates the host from the path.
    rest = rest.split("@", 1)[-1] if sep else text.split("@", 1)[-1].replace(":", "/", 1)
    host, _, path = rest.partition("/")
    return f"{host.split(':', 1)[0]}/{path.strip('/')}"


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison of a header (any text, even undecodable bytes) with a secret."""
    return hmac.compare_digest(_bytes(given), _bytes(expected))


def deployment_id(text: str) -> int | None:
    """A deployment id from a URL: ASCII digits within SQLite's range, else None (not found)."""
    number = wire.parse_uint(text, MAX_ID)
    return number or None  # ids start at 1


def gitlab_token_only(headers: Any) -> bool:
    """True when the delivery authenticates by GitLab's clear-text X-Gitlab-Token alone."""
    return not any(headers.get(name, "") for name in ("X-Hub-Signature-256", "X-Gitea-Signature",
                                                      "X-Forgejo-Signature")) \
        and bool(headers.get("X-Gitlab-Token", ""))


def verify_webhook(secret: str, body: bytes, headers: Any) -> bool:
    """GitHub (X-Hub-Signature-256), Gitea/Forgejo (X-Gitea-Signature) HMAC-SHA256 of the body;
    GitLab (X-Gitlab-Token) sends the secret itself (whether that is accepted at all is the
    handler's decision: `webhook_gitlab_token`)."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    github = headers.get("X-Hub-Signature-256", "")
    if github:
        return _same(github, f"sha256={digest}")
    gitea = headers.get("X-Gitea-Signature", "") or headers.get("X-Forgejo-Signature", "")
    if gitea:
        return _same(gitea, digest)
    gitlab = headers.get("X-Gitlab-Token", "")
    if gitlab:
        return _same(gitlab, secret)
    return False


def _closed(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def build_app(ctx: WebContext) -> web.Application:
    listening = listen_authorities(ctx.settings().listen)  # `listen` changes need a restart
    sessions = Sessions()
    deliveries = Deliveries()
    throttles = {"api_token": throttle.Throttle(), "webhook_secret": throttle.Throttle()}
    guessing = throttle.middleware(throttles, lambda request: credential(request, ctx.settings()),
                                   lambda request: forwarded.client_address(request, ctx.settings().trusted_proxies))

    def declared() -> dict[str, tuple[str, ...]]:
        """The sites this instance looks after (its shard's) and their servers, by domain: so
        summing the metrics of every shard's instance counts each site once."""
        decls = ctx.declarations()
        if decls is None:
            return {}
        mine, _ = split(decls, shard_of(ctx))
        return {**{d: (s.server,) for d, s in mine.invalid.items()}, **{d: s.targets for d, s in mine.sites.items()}}

    def sharding() -> tuple[str, int]:
        decls = ctx.declarations()
        shard = shard_of(ctx)
        return str(shard), len(split(decls, shard)[1]) if decls is not None else 0

    collector = ReconcilerCollector(ctx.store, ctx.stats, declared, sharding)
    registry = registry_for(collector)

    def bearer(request: web.Request, token: str) -> bool:
        return _same(request.headers.get("Authorization", ""), f"Bearer {token}")

    def authenticated(request: web.Request) -> str | None:
        """How the request authenticates now: "bearer", "cookie" or None."""
        token = ctx.settings().api_token
        sessions.observe(token)  # a new token ends every session, whoever notices it first
        if not token:
            return None
        if bearer(request, token):
            return "bearer"
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie and sessions.valid(cookie, token):
            return "cookie"
        return None

    def same_origin(request: web.Request) -> bool:
        """No Origin (not a browser, or an old one), or one naming this endpoint."""
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            return False  # "null" (sandboxed frames, redirects) and anything odd
        host = request.headers.get("Host", "")
        return parts.netloc.lower() == host.lower() or host_allowed(parts.netloc, listening, ctx.settings().http_hosts)

    def refused(status: int, error: str, **headers: str) -> web.Response:
        return web.json_response({"error": error}, status=status, headers=headers or None)

    @web.middleware
    async def host_check(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        hosts = request.headers.getall("Host", [])
        if len(hosts) != 1 or not host_allowed(hosts[0], listening, ctx.settings().http_hosts):
            shown = wire.display(hosts[0], 100) if hosts else "(none)"
            return refused(421, f"Host {shown} is not an address of this endpoint: add it to http_hosts "
                                "in reconciler.toml if a reverse proxy or a name in front of it sends it")
        response: web.StreamResponse = await handler(request)
        return response

    @web.middleware
    async def auth_check(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        # The page itself holds no data; what it loads is guarded like any other read.
        if request.path not in OPEN_PATHS:
            if not ctx.settings().api_token:
                sessions.observe(None)  # no token: no session either, then or later
                return refused(403, NO_TOKEN)
            how = authenticated(request)
            if how is None:
                return refused(401, "authentication required: send Authorization: Bearer <api_token>, "
                                    "or sign in on the dashboard", **{"WWW-Authenticate": 'Bearer realm="reconciler"'})
            if how == "cookie" and request.method not in SAFE_METHODS and not same_origin(request):
                return refused(403, "cross-origin request refused: its Origin is not this endpoint")
        response: web.StreamResponse = await handler(request)
        return response

    async def index(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(DASHBOARD, headers={
            "Content-Security-Policy": "frame-ancestors 'none'", "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"})

    async def login(request: web.Request) -> web.Response:
        token = ctx.settings().api_token
        sessions.observe(token)
        if not token:
            return refused(403, NO_TOKEN)
        if not same_origin(request):
            return refused(403, "cross-origin request refused: its Origin is not this endpoint")
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            return refused(400, 'the body must be JSON: {"token": "..."}')
        given = body.get("token") if isinstance(body, dict) else None
        if not isinstance(given, str) or not _same(given, token):
            return refused(401, "wrong token")
        response = web.json_response({"signed_in": True, "expires_in": int(SESSION_TTL)})
        response.set_cookie(SESSION_COOKIE, sessions.create(token), max_age=int(SESSION_TTL), path="/",
                            httponly=True, samesite="Strict", secure=cookie_secure(request, ctx.settings()) or None)
        return response

    async def logout(request: web.Request) -> web.Response:
        if not same_origin(request):
            return refused(403, "cross-origin request refused: its Origin is not this endpoint")
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            sessions.drop(cookie)
        response = web.json_response({"signed_in": False})
        response.del_cookie(SESSION_COOKIE, path="/")
        return response

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def sites(request: web.Request) -> web.Response:
        shard = shard_of(ctx)
        # Each site says its shard and whether it is skipped; the header says which one we are.
        return web.json_response(site_views(ctx.store, ctx.declarations(), shard),
                                 headers={"X-Reconciler-Shard": str(shard)})

    async def deployments(request: web.Request) -> web.Response:
        domain = request.match_info["domain"]
        if ctx.store.site(domain) is None:
            return web.json_response({"error": f"{domain}: unknown site"}, status=404)
        return web.json_response(history_views(ctx.store, domain))

    def gone(request: web.Request) -> Callable[[], bool]:
        """The stream's end condition: the client left, or its authentication no longer holds."""
        return lambda: _closed(request) or authenticated(request) is None

    async def events(request: web.Request) -> web.StreamResponse:
        response = _sse()
        done = gone(request)
        last = ""
        idle = 0
        with client_may_leave(request):
            await response.prepare(request)
            while not ctx.stopping.is_set() and not done():
                current = json.dumps(snapshot(ctx), sort_keys=True)
                if current != last:
                    await response.write(f"event: snapshot\ndata: {current}\n\n".encode())
                    last, idle = current, 0
                elif (idle := idle + 1) % HEARTBEAT == 0:
                    await response.write(b": keepalive\n\n")
                await asyncio.sleep(POLL)
        return response

    async def deployment_log(request: web.Request) -> web.StreamResponse:
        domain = request.match_info["domain"]
        number = deployment_id(request.match_info["id"])
        row = ctx.store.deployment(number) if number is not None else None
        if row is None or row["site"] != domain:
            return web.json_response({"error": "no such deployment"}, status=404)
        response = _sse()
        done = gone(request)
        with client_may_leave(request):
            await response.prepare(request)
            # `done` is asked before every remote read and the silent polls write a keepalive: a
            # client that left stops the remote commands at once, not when the deploy ends.
            async with contextlib.aclosing(follow_log(ctx.store, ctx.pool, row, ctx.settings().command_timeout,
                                                      gone=done, idle=True)) as chunks:
                async for chunk in chunks:
                    await response.write(f"event: log\ndata: {json.dumps(chunk)}\n\n".encode() if chunk
                                         else b": keepalive\n\n")
            if not done():
                await response.write(b"event: end\ndata: {}\n\n")
        return response

    def requester(request: web.Request) -> str:
        """Who asked, for history's `requested_by`: the token's configured name (`api_token_name`,
        default "api") for a script or tool with the bearer token, or "dashboard" for someone
        signed in to the dashboard (the endpoint knows no user names: one token)."""
        return "dashboard" if authenticated(request) == "cookie" else ctx.settings().api_token_name

    def pin_author(request: web.Request) -> str:
        """A pin commit's author: who asked, so the switch's history row says it as a retry's does
        ("rollback (dashboard)"); the committer is the reconciler."""
        return f"{requester(request)} <reconciler@{socket.gethostname()}>"

    def action_refused(domain: str, action: str, exc: ReconcilerError) -> web.Response:
        """An action refused with nothing done: the message, and a status saying why."""
        status = 404 if isinstance(exc, UnknownSite) else 503 if isinstance(exc, TemporaryError) else 409
        # The domain is the URL's, whatever it holds: one bounded, printable log line.
        log.info("%s: %s refused from the API (%d): %s", wire.display(domain, 100), action, status,
                 wire.display(str(exc), 300))
        return refused(status, str(exc))

    def answered(request: web.Request, domain: str, action: str, **result: Any) -> web.Response:
        """What was done; the daemon is woken for the site (it acts now, not at its next poll)."""
        ctx.request({domain})
        by = requester(request)
        detail = ", ".join(f"{key} {str(value)[:12]}" for key, value in result.items())
        log.info("%s: %s asked through the %s%s", domain, action, by, f" ({detail})" if detail else "")
        return web.json_response({"domain": domain, "action": action, "requested_by": by, **result})

    def operator() -> Reconciler:
        """The daemon's reconciler; an app built without one gets one per action, on the current
        settings and the shared store and pool (nothing of its own to close)."""
        return ctx.reconciler or Reconciler(ctx.settings(), ctx.store, ctx.pool)

    async def rollback(request: web.Request) -> web.Response:
        domain = request.match_info["domain"]
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            return refused(400, 'the body must be JSON: {"release": "..."} or {} for the previous release')
        if not isinstance(body, dict):
            return refused(400, 'the body must be a JSON object: {"release": "..."} or {} for the previous release')
        release = body.get("release")
        if release is not None and not isinstance(release, str):
            return refused(400, '"release" must be a release name (ddMMYYYY-HHMMSS), or left out for the '
                                "previous release")
        try:
            chosen, commit = await actions.rollback(operator(), domain, release, pin_author(request))
        except ReconcilerError as exc:
            return action_refused(domain, "rollback", exc)
        return answered(request, domain, "rollback", release=chosen, commit=commit)

    async def unpin(request: web.Request) -> web.Response:
        domain = request.match_info["domain"]
        try:
            commit = await actions.unpin(operator(), domain, pin_author(request))
        except ReconcilerError as exc:
            return action_refused(domain, "unpin", exc)
        return answered(request, domain, "unpin", commit=commit)

    async def retry(request: web.Request) -> web.Response:
        domain = request.match_info["domain"]
        try:
            forgotten = await actions.retry(operator(), domain, requester(request))
        except ReconcilerError as exc:
            return action_refused(domain, "retry", exc)
        return answered(request, domain, "retry", forgotten=forgotten)

    async def redeploy(request: web.Request) -> web.Response:
        domain = request.match_info["domain"]
        try:
            await actions.redeploy(operator(), domain, requester(request))
        except ReconcilerError as exc:
            return action_refused(domain, "redeploy", exc)
        return answered(request, domain, "redeploy")

    async def git_hook(request: web.Request) -> web.Response:
        body = await request.read()
        settings = ctx.settings()
        secret = settings.webhook_secret
        if secret and gitlab_token_only(request.headers) and not settings.webhook_gitlab_token:
            return refused(401, "X-Gitlab-Token sends the secret itself, in clear, with every delivery: "
                                "refused unless webhook_gitlab_token = true in reconciler.toml")
        if not secret or not verify_webhook(secret, body, request.headers):
            return refused(401, "bad or missing signature")
        keys, has_id = delivery_keys(body, request.headers)
        if deliveries.seen(keys):
            log.info("webhook: a delivery already accepted in the last %.0f s came again: ignored", REPLAY_WINDOW)
            return web.json_response({"duplicate": True, "sites": []}, status=200)
        try:
            payload = json.loads(body)
        except ValueError:
            return refused(400, "the body must be JSON")
        deliveries.remember(keys)
        if not has_id:
            log.info("webhook: a signed delivery without a delivery id header: accepted, "
                     "deduplicated by its body only")
        urls = repository_urls(payload) if isinstance(payload, dict) else set()
        decls = ctx.declarations()
        matched = sorted(d for d, s in (decls.sites.items() if decls else []) if _normal(s.repository) in urls)
        if matched:
            ctx.request(set(matched))
        own = settings.repo_url
        declarations = own is not None and ctx.fetch is not None and \
            repository_key(own) in {repository_key(u) for u in urls}
        if declarations and ctx.fetch is not None:
            ctx.fetch()  # a push to the declarations: fetch now, the ref watcher does the rest
        answer: dict[str, Any] = {"sites": matched}
        if declarations:
            answer["declarations"] = True
        return web.json_response(answer, status=202)

    app = web.Application(middlewares=[host_check, guessing, auth_check])
    app[SESSIONS] = sessions
    app[DELIVERIES] = deliveries
    app[THROTTLES] = throttles
    app.router.add_get("/", index)
    app.router.add_post("/api/session", login)
    app.router.add_delete("/api/session", logout)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/sites", sites)
    app.router.add_get("/api/sites/{domain}/deployments", deployments)
    app.router.add_get("/api/sites/{domain}/deployments/{id}/log", deployment_log)
    app.router.add_get("/api/events", events)
    app.router.add_post("/api/sites/{domain}/rollback", rollback)
    app.router.add_post("/api/sites/{domain}/unpin", unpin)
    app.router.add_post("/api/sites/{domain}/retry", retry)
    app.router.add_post("/api/sites/{domain}/redeploy", redeploy)
    app.router.add_post("/hooks/git", git_hook)
    return app


def _sse() -> web.StreamResponse:
    return web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})


@contextlib.contextmanager
def client_may_leave(request: web.Request) -> Iterator[None]:
    """Around an event stream's writes: a client that went away (a closed tab, a killed curl: the
    write or its drain raises ConnectionResetError, aiohttp's ClientConnectionResetError, or
    BrokenPipeError) is how streams end, not an error: a debug line, no traceback, and the
    handler returns normally (aiohttp then finds the connection gone and drops it quietly). A
    cancelled handler (the daemon stopping, or aiohttp cancelling on a lost connection) is
    cancelled as asked, with a debug line too."""
    try:
        yield
    except ConnectionError as exc:
        log.debug("http: %s: the client %s went away (%s)", request.path, request.remote, type(exc).__name__)
    except asyncio.CancelledError:
        log.debug("http: %s: the stream to %s was cancelled", request.path, request.remote)
        raise


async def serve(ctx: WebContext) -> web.AppRunner:
    listen = ctx.settings().listen
    host, _, port = (listen or "").rpartition(":")
    # Streams end when the daemon stops; do not let a slow client hold up the shutdown.
    runner = web.AppRunner(build_app(ctx), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, host.strip("[]"), int(port)).start()
    log.info("http: listening on %s", listen)
    if (weak := throttle.weak_token(ctx.settings().api_token)) is not None:
        log.warning("http: %s", weak)
    return runner
