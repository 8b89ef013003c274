"""What the HTTP endpoint lets one read: the dashboard page, the JSON API with the SPEC shapes
(/api/sites, a site's deployments), /metrics, and two server-sent-event streams: /api/events
(a snapshot whenever it changes) and a deployment's log as it is written.

* Log streams notice a client that went away even while the log is silent (a keepalive each
  poll, and the connection's state is checked before every remote read): no `tail | base64`
  runs for a client that is gone.
* A client that goes away (a closed dashboard tab, a killed curl, a reset connection) is the
  normal end of an event stream: a debug line at most, never a traceback (`client_may_leave`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from reconciler.core import wire
from reconciler.core.shard import split
from reconciler.engine.deploy_log import follow_log
from reconciler.engine.views import history_views, site_views
from reconciler.service.http.context import WebContext, shard_of
from reconciler.service.http.security import Guard
from reconciler.service.metrics import ReconcilerCollector, registry_for

log = logging.getLogger(__name__)

# The page stays beside the service's package data (pyproject's package-data names it there).
DASHBOARD = Path(__file__).parent.parent / "dashboard.html"
POLL = 0.5
HEARTBEAT = 20  # polls between keepalive comments on an idle event stream
MAX_ID = 2**63 - 1  # SQLite's INTEGER: a larger id cannot exist and would overflow the query
PAGE_HEADERS = {"Content-Security-Policy": "frame-ancestors 'none'", "X-Frame-Options": "DENY",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


def snapshot(ctx: WebContext) -> dict[str, Any]:
    sites = site_views(ctx.store, ctx.declarations(), shard_of(ctx))
    return {"sites": sites,
            "deployments": {s["domain"]: history_views(ctx.store, s["domain"])[:10] for s in sites}}


def deployment_id(text: str) -> int | None:
    """A deployment id from a URL: ASCII digits within SQLite's range, else None (not found)."""
    number = wire.parse_uint(text, MAX_ID)
    return number or None  # ids start at 1


def _closed(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


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


class ReadApi:
    """The read handlers of one app; streams end when the guard no longer lets their client in."""

    def __init__(self, ctx: WebContext, guard: Guard) -> None:
        self.ctx, self.guard = ctx, guard
        self.registry = registry_for(ReconcilerCollector(ctx.store, ctx.stats, self._declared, self._sharding))

    def _declared(self) -> dict[str, tuple[str, ...]]:
        """The sites this instance looks after (its shard's) and their servers, by domain: so
        summing the metrics of every shard's instance counts each site once."""
        decls = self.ctx.declarations()
        if decls is None:
            return {}
        mine, _ = split(decls, shard_of(self.ctx))
        return {**{d: (s.server,) for d, s in mine.invalid.items()}, **{d: s.targets for d, s in mine.sites.items()}}

    def _sharding(self) -> tuple[str, int]:
        decls = self.ctx.declarations()
        shard = shard_of(self.ctx)
        return str(shard), len(split(decls, shard)[1]) if decls is not None else 0

    async def index(self, request: web.Request) -> web.StreamResponse:
        """GET /: the dashboard page."""
        return web.FileResponse(DASHBOARD, headers=PAGE_HEADERS)

    async def metrics(self, request: web.Request) -> web.Response:
        """GET /metrics: the Prometheus metrics."""
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def sites(self, request: web.Request) -> web.Response:
        """GET /api/sites: every site, as `status --json` (with the X-Reconciler-Shard header)."""
        shard = shard_of(self.ctx)
        # Each site says its shard and whether it is skipped; the header says which one we are.
        return web.json_response(site_views(self.ctx.store, self.ctx.declarations(), shard),
                                 headers={"X-Reconciler-Shard": str(shard)})

    async def deployments(self, request: web.Request) -> web.Response:
        """GET /api/sites/{domain}/deployments: the site's deployments, as `history --json`."""
        domain = request.match_info["domain"]
        if self.ctx.store.site(domain) is None:
            return web.json_response({"error": f"{domain}: unknown site"}, status=404)
        return web.json_response(history_views(self.ctx.store, domain))

    def gone(self, request: web.Request) -> Callable[[], bool]:
        """The stream's end condition: the client left, or its authentication no longer holds."""
        return lambda: _closed(request) or self.guard.authenticated(request) is None

    async def events(self, request: web.Request) -> web.StreamResponse:
        """GET /api/events: server-sent events, a snapshot of sites and deployments whenever anything changes."""
        response = _sse()
        done = self.gone(request)
        last = ""
        idle = 0
        with client_may_leave(request):
            await response.prepare(request)
            while not self.ctx.stopping.is_set() and not done():
                current = json.dumps(snapshot(self.ctx), sort_keys=True)
                if current != last:
                    await response.write(f"event: snapshot\ndata: {current}\n\n".encode())
                    last, idle = current, 0
                elif (idle := idle + 1) % HEARTBEAT == 0:
                    await response.write(b": keepalive\n\n")
                await asyncio.sleep(POLL)
        return response

    async def deployment_log(self, request: web.Request) -> web.StreamResponse:
        """GET /api/sites/{domain}/deployments/{id}/log: server-sent events, the deployment's output as it is
        written."""
        domain = request.match_info["domain"]
        number = deployment_id(request.match_info["id"])
        row = self.ctx.store.deployment(number) if number is not None else None
        if row is None or row["site"] != domain:
            return web.json_response({"error": "no such deployment"}, status=404)
        response = _sse()
        done = self.gone(request)
        with client_may_leave(request):
            await response.prepare(request)
            # `done` is asked before every remote read and the silent polls write a keepalive: a
            # client that left stops the remote commands at once, not when the deploy ends.
            async with contextlib.aclosing(follow_log(self.ctx.store, self.ctx.pool, row,
                                                      self.ctx.settings().command_timeout,
                                                      gone=done, idle=True)) as chunks:
                async for chunk in chunks:
                    await response.write(f"event: log\ndata: {json.dumps(chunk)}\n\n".encode() if chunk
                                         else b": keepalive\n\n")
            if not done():
                await response.write(b"event: end\ndata: {}\n\n")
        return response
