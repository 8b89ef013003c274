"""The HTTP endpoint's assembly: the route table, the order of the checks every request passes
(Host, then the throttle of failed authentications, then authentication and Origin), and
`serve`, which the daemon calls when `listen` is set. What each route does is in the module
named beside it."""

from __future__ import annotations

import logging

from aiohttp import web

from reconciler.service.http import throttle
from reconciler.service.http.actions import ACTIONS, Actions
from reconciler.service.http.context import WebContext
from reconciler.service.http.hooks import Deliveries, Hooks
from reconciler.service.http.read_api import ReadApi
from reconciler.service.http.security import Guard, Sessions

log = logging.getLogger(__name__)

# The app's memories, for whoever must look at them (tests do).
SESSIONS = web.AppKey("sessions", Sessions)
DELIVERIES = web.AppKey("deliveries", Deliveries)
THROTTLES = web.AppKey("throttles", dict[str, throttle.Throttle])


def build_app(ctx: WebContext) -> web.Application:
    guard = Guard(ctx)
    hooks = Hooks(ctx)
    read = ReadApi(ctx, guard)
    operator = Actions(ctx, guard)
    app = web.Application(middlewares=[guard.host_check, guard.guessing, guard.auth_check])
    app[SESSIONS] = guard.sessions
    app[DELIVERIES] = hooks.deliveries
    app[THROTTLES] = guard.throttles
    app.router.add_get("/", read.index)
    app.router.add_post("/api/session", guard.login)
    app.router.add_delete("/api/session", guard.logout)
    app.router.add_get("/api/whoami", guard.whoami)
    app.router.add_get("/metrics", read.metrics)
    app.router.add_get("/api/sites", read.sites)
    app.router.add_get("/api/sites/{domain}/deployments", read.deployments)
    app.router.add_get("/api/sites/{domain}/deployments/{id}/log", read.deployment_log)
    app.router.add_get("/api/events", read.events)
    for name in ACTIONS:  # rollback, unpin, retry, redeploy
        app.router.add_post(f"/api/sites/{{domain}}/{name}", operator.handler(name))
    app.router.add_post("/hooks/git", hooks.git_hook)
    return app


async def serve(ctx: WebContext) -> web.AppRunner:
    listen = ctx.settings().listen
    host, _, port = (listen or "").rpartition(":")
    # Streams end when the daemon stops; do not let a slow client hold up the shutdown.
    runner = web.AppRunner(build_app(ctx), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, host.strip("[]"), int(port)).start()
    log.info("http: listening on %s", listen)
    if (weak := throttle.weak_token(ctx.settings().single_token)) is not None:
        log.warning("http: %s", weak)
    return runner
