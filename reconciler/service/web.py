"""The daemon's HTTP endpoint (opt-in with `listen`): /metrics, the JSON API with the SPEC
shapes, a server-sent-events stream of changes, the dashboard page, deployment logs as they
are written, rollback (a commit, exactly like the CLI) and the git push webhook.

Writes need `Authorization: Bearer <api_token>`; reads are open when listening on loopback
and need the token otherwise.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from reconciler.config import Settings
from reconciler.core import wire
from reconciler.core.declarations import Declarations
from reconciler.engine import pinning
from reconciler.engine.deploy_log import follow_log
from reconciler.engine.store import Store
from reconciler.engine.views import history_views, site_views
from reconciler.errors import ReconcilerError
from reconciler.remote.transport.pool import TransportPool
from reconciler.service.metrics import PassStats, ReconcilerCollector, registry_for

log = logging.getLogger(__name__)

DASHBOARD = Path(__file__).with_name("dashboard.html")
POLL = 0.5
HEARTBEAT = 20  # polls between keepalive comments on an idle event stream
MAX_ID = 2**63 - 1  # SQLite's INTEGER: a larger id cannot exist and would overflow the query


@dataclass
class WebContext:
    settings: Callable[[], Settings]  # the current settings: read on every request, so SIGHUP rotates secrets
    store: Store
    pool: TransportPool
    stats: PassStats
    declarations: Callable[[], Declarations | None]
    request: Callable[[set[str]], None]
    stopping: asyncio.Event


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def snapshot(ctx: WebContext) -> dict[str, Any]:
    sites = site_views(ctx.store, ctx.declarations())
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


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison of a header (any text, even undecodable bytes) with a secret."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def deployment_id(text: str) -> int | None:
    """A deployment id from a URL: ASCII digits within SQLite's range, else None (not found)."""
    number = wire.parse_uint(text, MAX_ID)
    return number or None  # ids start at 1


def verify_webhook(secret: str, body: bytes, headers: Any) -> bool:
    """GitHub (X-Hub-Signature-256), Gitea/Forgejo (X-Gitea-Signature) HMAC-SHA256 of the body;
    GitLab (X-Gitlab-Token) sends the secret itself."""
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


def build_app(ctx: WebContext) -> web.Application:
    host = (ctx.settings().listen or "").rpartition(":")[0]  # `listen` changes need a restart
    open_reads = _loopback(host)
    def declared() -> dict[str, str]:
        decls = ctx.declarations()
        if decls is None:
            return {}
        return {**{d: s.server for d, s in decls.invalid.items()}, **{d: s.server for d, s in decls.sites.items()}}

    collector = ReconcilerCollector(ctx.store, ctx.stats, declared)
    registry = registry_for(collector)

    def authorized(request: web.Request) -> bool:
        token = ctx.settings().api_token
        given = request.headers.get("Authorization", "")
        return bool(token) and _same(given, f"Bearer {token}")

    @web.middleware
    async def reads(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        # The page itself holds no data; what it loads is guarded like any other read.
        if request.method in ("GET", "HEAD") and request.path != "/" and not open_reads and not authorized(request):
            return web.json_response({"error": "a bearer token is required off loopback"}, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    async def index(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(DASHBOARD)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def sites(request: web.Request) -> web.Response:
        return web.json_response(site_views(ctx.store, ctx.declarations()))

    async def deployments(request: web.Request) -> web.Response:
        domain = request.match_info["domain"]
        if ctx.store.site(domain) is None:
            return web.json_response({"error": f"{domain}: unknown site"}, status=404)
        return web.json_response(history_views(ctx.store, domain))

    async def events(request: web.Request) -> web.StreamResponse:
        response = await _sse(request)
        last = ""
        idle = 0
        while not ctx.stopping.is_set():
            current = json.dumps(snapshot(ctx), sort_keys=True)
            if current != last:
                await response.write(f"event: snapshot\ndata: {current}\n\n".encode())
                last, idle = current, 0
            elif (idle := idle + 1) % HEARTBEAT == 0:
                await response.write(b": keepalive\n\n")  # also notices a client that went away
            await asyncio.sleep(POLL)
        return response

    async def deployment_log(request: web.Request) -> web.StreamResponse:
        domain = request.match_info["domain"]
        number = deployment_id(request.match_info["id"])
        row = ctx.store.deployment(number) if number is not None else None
        if row is None or row["site"] != domain:
            return web.json_response({"error": "no such deployment"}, status=404)
        response = await _sse(request)
        async for chunk in follow_log(ctx.store, ctx.pool, row, ctx.settings().command_timeout):
            await response.write(f"event: log\ndata: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"event: end\ndata: {}\n\n")
        return response

    async def rollback(request: web.Request) -> web.Response:
        if not authorized(request):
            return web.json_response({"error": "a valid bearer token is required"}, status=401)
        domain = request.match_info["domain"]
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            return web.json_response({"error": "the body must be JSON"}, status=400)
        release = body.get("release") if isinstance(body, dict) else None
        settings = ctx.settings()
        try:
            chosen, commit = pinning.rollback(settings.repo, settings.branch, ctx.store, domain,
                                              release if isinstance(release, str) else None)
        except ReconcilerError as exc:
            return web.json_response({"error": str(exc)}, status=409)
        log.info("%s: rollback to %s committed from the API (%s)", domain, chosen, commit[:12])
        return web.json_response({"domain": domain, "release": chosen, "commit": commit})

    async def git_hook(request: web.Request) -> web.Response:
        body = await request.read()
        secret = ctx.settings().webhook_secret
        if not secret or not verify_webhook(secret, body, request.headers):
            return web.json_response({"error": "bad or missing signature"}, status=401)
        try:
            payload = json.loads(body)
        except ValueError:
            return web.json_response({"error": "the body must be JSON"}, status=400)
        urls = repository_urls(payload) if isinstance(payload, dict) else set()
        decls = ctx.declarations()
        matched = sorted(d for d, s in (decls.sites.items() if decls else []) if _normal(s.repository) in urls)
        if matched:
            ctx.request(set(matched))
        return web.json_response({"sites": matched}, status=202)

    app = web.Application(middlewares=[reads])
    app.router.add_get("/", index)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/sites", sites)
    app.router.add_get("/api/sites/{domain}/deployments", deployments)
    app.router.add_get("/api/sites/{domain}/deployments/{id}/log", deployment_log)
    app.router.add_get("/api/events", events)
    app.router.add_post("/api/sites/{domain}/rollback", rollback)
    app.router.add_post("/hooks/git", git_hook)
    return app


async def _sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    return response


async def serve(ctx: WebContext) -> web.AppRunner:
    listen = ctx.settings().listen
    host, _, port = (listen or "").rpartition(":")
    # Streams end when the daemon stops; do not let a slow client hold up the shutdown.
    runner = web.AppRunner(build_app(ctx), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, host.strip("[]"), int(port)).start()
    log.info("http: listening on %s", listen)
    return runner
