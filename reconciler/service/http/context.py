"""What every part of the HTTP service is given: the daemon's state (`WebContext`), and the one
shape of a refusal (`refused`: a JSON `{"error": ...}` with its status)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from reconciler.config import Settings
from reconciler.core.declarations import Declarations
from reconciler.core.shard import Shard
from reconciler.engine.converge import Reconciler
from reconciler.engine.store import Store
from reconciler.remote.transport.pool import TransportPool
from reconciler.service.metrics import PassStats


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
    # The daemon's ask for sites an operator acted on (`Daemon.asked(domains, landed=)`): they go
    # now, not after a backoff, and a pin or unpin just committed takes the lock command's fast
    # path. None (an app without a daemon): a plain `request`.
    asked: Callable[[set[str], bool], None] | None = None


def shard_of(ctx: WebContext) -> Shard:
    return Shard.parse(ctx.settings().shard)


def refused(status: int, error: str, **headers: str) -> web.Response:
    """A request answered with nothing done: `{"error": error}` with `status`."""
    return web.json_response({"error": error}, status=status, headers=headers or None)
