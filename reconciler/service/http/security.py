"""Who may ask what of the HTTP endpoint. Every rule is checked on each request against the
current settings, so a SIGHUP that changes `api_token`, `webhook_secret`,
`webhook_gitlab_token` or `http_hosts` applies to the next request; `listen` itself needs a
restart.

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
* Authentication. `Authorization: Bearer <token>` (scripts, Prometheus), or the session
  cookie of the dashboard: POST /api/session with {"token": ...} sets `reconciler_session`
  (HttpOnly, SameSite=Strict, Path=/, 12 hours), a random id kept in this process's memory
  only and bound to the token it was made with: once that token is gone, the session is dead.
  A token is the single `api_token` (named `api_token_name`, "api") or one of the named
  `[[api_token]]` entries (config.ApiToken: its SHA-256, or an owner-only file); the request
  acts as that name (`Caller`), which history and pin commits record and GET /api/whoami
  answers. Tokens are compared as SHA-256 digests, each in constant time, all of them always.
  DELETE /api/session signs out. A cookie-authenticated request that changes something
  (the actions, sign-out) must also carry no Origin or an Origin naming this endpoint (403
  otherwise): SameSite=Strict already keeps the cookie off cross-site requests, this is the
  second lock. Event streams check their authentication on every poll and end once it fails.
* Guessing. Failed authentications are throttled per client address and per secret
  (throttle.py: `api_token` for the bearer header and sign-in, `webhook_secret` for signed
  deliveries): after thirty, the client's attempts are answered 429 with Retry-After,
  unchecked, for exponentially longer; each failure is logged with the client's address. A
  valid session cookie is no attempt and keeps working. Behind a reverse proxy the client is
  the proxy's X-Forwarded-For entry, and the cookie is Secure when it says X-Forwarded-Proto:
  https, only for proxies listed in `trusted_proxies` (forwarded.py); `cookie_secure = true`
  makes it Secure always.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from reconciler.config import Settings, token_digest
from reconciler.core import wire
from reconciler.errors import ConfigError
from reconciler.service.http import forwarded, throttle
from reconciler.service.http.context import WebContext, refused
from reconciler.service.http.digests import digest, header_bytes
from reconciler.service.http.hooks import SIGNATURE_HEADERS, gitlab_token_only

log = logging.getLogger(__name__)

SESSION_COOKIE = "reconciler_session"
SESSION_TTL = 12 * 3600.0
MAX_SESSIONS = 1000  # only a valid token makes one; the oldest goes first beyond this
# Exact paths (never prefixes) that answer without the token: the page holds no data, the
# session is how one signs in, the webhook authenticates by its signature.
OPEN_PATHS = frozenset({"/", "/api/session", "/hooks/git"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
NO_TOKEN = ("no api_token is set (or none could be read: see the log): the HTTP API answers nothing until "
            "one is (set api_token, or [[api_token]] entries, in reconciler.toml and reload with SIGHUP)")
CROSS_ORIGIN = "cross-origin request refused: its Origin is not this endpoint"

Handler = Callable[[web.Request], Any]


# Every configured token, as the SHA-256 of the token -> its name (who acts with it).
Tokens = Mapping[bytes, str]


@dataclass(frozen=True)
class Caller:
    """Who a request authenticates as: the name of its token, and how ("bearer" or "session")."""

    name: str
    via: str


class Sessions:
    """Dashboard sessions, in memory: the SHA-256 of the cookie value -> (the SHA-256 of the
    token it was made with, that token's name, when it expires). A session is valid only while
    its token is configured under the same name: the first request that sees the tokens changed
    ends the sessions of every token gone (so configuring it again later revives none of them)."""

    def __init__(self, ttl: float = SESSION_TTL, limit: int = MAX_SESSIONS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.limit, self.clock = ttl, limit, clock
        self._live: OrderedDict[bytes, tuple[bytes, str, float]] = OrderedDict()
        self._tokens: dict[bytes, str] = {}  # the tokens last seen

    def __len__(self) -> int:
        return len(self._live)

    def observe(self, tokens: Tokens) -> None:
        """The tokens configured now; the sessions of a token no longer among them end."""
        if dict(tokens) != self._tokens:
            self._tokens = dict(tokens)
            for key, (made_with, name, _) in list(self._live.items()):
                if self._tokens.get(made_with) != name:
                    del self._live[key]

    def create(self, tokens: Tokens, made_with: bytes) -> str:
        """A new session of the token whose SHA-256 is `made_with` (one of `tokens`)."""
        self.observe(tokens)
        now = self.clock()
        for key in [k for k, (_, _, expires) in self._live.items() if expires <= now]:
            del self._live[key]
        while len(self._live) >= self.limit:
            self._live.popitem(last=False)
        value = secrets.token_urlsafe(32)
        self._live[digest(b"session", value.encode())] = (made_with, self._tokens[made_with], now + self.ttl)
        return value

    def valid(self, value: str, tokens: Tokens) -> str | None:
        """The name the session `value` acts as, or None (no such session, expired, or its
        token is gone)."""
        self.observe(tokens)
        key = digest(b"session", header_bytes(value))
        entry = self._live.get(key)
        if entry is None:
            return None
        made_with, name, expires = entry
        if expires <= self.clock() or self._tokens.get(made_with) != name:
            del self._live[key]
            return None
        return name

    def drop(self, value: str) -> None:
        self._live.pop(digest(b"session", header_bytes(value)), None)


def token_named(tokens: Tokens, given: str) -> tuple[bytes, str] | None:
    """The configured token `given` is (its SHA-256 and name), or None. Every configured token
    is compared, each in constant time, whichever matches: how long it takes says nothing about
    which token, or how much of one, was right."""
    given_digest = token_digest(given)
    found: tuple[bytes, str] | None = None
    for made_with, name in tokens.items():
        if hmac.compare_digest(given_digest, made_with):
            found = (made_with, name)
    return found


def configured_tokens(settings: Settings) -> dict[bytes, str]:
    """Every token `settings` configure: the single `api_token` (named `api_token_name`) and the
    `[[api_token]]` entries. An entry whose file cannot be read now is left out, and logged (by
    its name and path, never its content)."""
    tokens: dict[bytes, str] = {}
    if settings.single_token:
        tokens[token_digest(settings.single_token)] = settings.api_token_name
    for entry in settings.named_tokens:
        try:
            tokens[entry.digest()] = entry.name
        except ConfigError as exc:
            log.error("http: %s; that token is refused until it is fixed (then SIGHUP)", exc)
    return tokens


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


class Guard:
    """The checks of one app: its middlewares (Host, the throttle, authentication and Origin, in
    that order), how a request authenticates, and the sign-in and sign-out handlers."""

    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx
        self.listening = listen_authorities(ctx.settings().listen)  # `listen` changes need a restart
        self.sessions = Sessions()
        self._tokens: tuple[Settings, dict[bytes, str]] | None = None
        self.throttles = {"api_token": throttle.Throttle(), "webhook_secret": throttle.Throttle()}
        self.guessing = throttle.middleware(
            self.throttles, lambda request: credential(request, ctx.settings()),
            lambda request: forwarded.client_address(request, ctx.settings().trusted_proxies))

    def tokens(self) -> dict[bytes, str]:
        """The tokens of the current settings, read once per settings (a SIGHUP re-reads the
        token files); the sessions of a token gone end."""
        settings = self.ctx.settings()
        if self._tokens is None or self._tokens[0] is not settings:
            self._tokens = (settings, configured_tokens(settings))
        self.sessions.observe(self._tokens[1])  # whoever notices a change first ends those sessions
        return self._tokens[1]

    def authenticated(self, request: web.Request) -> Caller | None:
        """Who the request authenticates as now (a bearer token, else a session cookie), or None."""
        tokens = self.tokens()
        if not tokens:
            return None
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and given and (found := token_named(tokens, given.strip())) is not None:
            return Caller(found[1], "bearer")
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie and (name := self.sessions.valid(cookie, tokens)) is not None:
            return Caller(name, "session")
        return None

    def same_origin(self, request: web.Request) -> bool:
        """No Origin (not a browser, or an old one), or one naming this endpoint."""
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            return False  # "null" (sandboxed frames, redirects) and anything odd
        host = request.headers.get("Host", "")
        return parts.netloc.lower() == host.lower() or host_allowed(parts.netloc, self.listening,
                                                                    self.ctx.settings().http_hosts)

    @web.middleware
    async def host_check(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        hosts = request.headers.getall("Host", [])
        if len(hosts) != 1 or not host_allowed(hosts[0], self.listening, self.ctx.settings().http_hosts):
            shown = wire.display(hosts[0], 100) if hosts else "(none)"
            return refused(421, f"Host {shown} is not an address of this endpoint: add it to http_hosts "
                                "in reconciler.toml if a reverse proxy or a name in front of it sends it")
        response: web.StreamResponse = await handler(request)
        return response

    @web.middleware
    async def auth_check(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # The page itself holds no data; what it loads is guarded like any other read.
        if request.path not in OPEN_PATHS:
            if not self.tokens():  # no token: no session either, then or later
                return refused(403, NO_TOKEN)
            caller = self.authenticated(request)
            if caller is None:
                return refused(401, "authentication required: send Authorization: Bearer <api_token>, "
                                    "or sign in on the dashboard", **{"WWW-Authenticate": 'Bearer realm="reconciler"'})
            if caller.via == "session" and request.method not in SAFE_METHODS and not self.same_origin(request):
                return refused(403, CROSS_ORIGIN)
        response: web.StreamResponse = await handler(request)
        return response

    async def login(self, request: web.Request) -> web.Response:
        """POST /api/session: sign in with {"token": "..."}; answers the token's name."""
        tokens = self.tokens()
        if not tokens:
            return refused(403, NO_TOKEN)
        if not self.same_origin(request):
            return refused(403, CROSS_ORIGIN)
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            return refused(400, 'the body must be JSON: {"token": "..."}')
        given = body.get("token") if isinstance(body, dict) else None
        found = token_named(tokens, given) if isinstance(given, str) else None
        if found is None:
            return refused(401, "wrong token")
        response = web.json_response({"signed_in": True, "name": found[1], "expires_in": int(SESSION_TTL)})
        response.set_cookie(SESSION_COOKIE, self.sessions.create(tokens, found[0]), max_age=int(SESSION_TTL), path="/",
                            httponly=True, samesite="Strict",
                            secure=cookie_secure(request, self.ctx.settings()) or None)
        return response

    async def whoami(self, request: web.Request) -> web.Response:
        """GET /api/whoami: who this request acts as (the dashboard's header shows it)."""
        caller = self.authenticated(request)
        assert caller is not None  # auth_check let it through
        return web.json_response({"name": caller.name, "via": caller.via})

    async def logout(self, request: web.Request) -> web.Response:
        """DELETE /api/session: sign out."""
        if not self.same_origin(request):
            return refused(403, CROSS_ORIGIN)
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            self.sessions.drop(cookie)
        response = web.json_response({"signed_in": False})
        response.del_cookie(SESSION_COOKIE, path="/")
        return response
