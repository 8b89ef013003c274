"""The operator actions over HTTP: POST /api/sites/{domain}/rollback ({"release": ...} or {}
for the previous release) and /unpin commit a pin; /retry and /redeploy are requests recorded in
the state database. One handler serves all four, from the table ACTIONS.

They go through `engine.actions`, like the CLI, so they check the same facts (one probe of the
site's server), refuse the same things with the same messages and sign pin commits under
`require_signed` the same way. Who asked (the name of the token used, as a bearer token or
through a dashboard session: security.Caller) is in history's `requested_by` (for a pin, as the
pin commit's author name). Each
answers 200 with what was done and wakes the daemon for that site. Refusals, nothing done or
committed: 404 for a site not declared (or invalid); 409 for everything the operator must change
first (the release is already active, gone from the server or not a successful build, nothing
to retry, a pinned site to redeploy, a site not pinned to unpin, a pin commit that lost a race
with another commit, no signing key under `require_signed`); 503 when the site's server cannot
be reached to check; 400 for a body that is not the JSON asked for.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from reconciler.core import wire
from reconciler.engine import actions
from reconciler.engine.converge import Reconciler
from reconciler.errors import ReconcilerError, TemporaryError, UnknownSite
from reconciler.service.http.context import WebContext, refused
from reconciler.service.http.security import Guard

log = logging.getLogger(__name__)

_PREVIOUS = '{"release": "..."} or {} for the previous release'


class BadBody(ValueError):
    """Raised when an action's body is not the JSON it asks for (answered 400)."""


@dataclass(frozen=True)
class Ask:
    """One operator's request, as read from the HTTP request."""

    domain: str
    requester: str  # history's `requested_by`
    author: str     # a pin commit's author
    release: str | None = None


async def _rollback(operator: Reconciler, ask: Ask) -> dict[str, Any]:
    """Commit a pin like `reconciler rollback`: {"release": "..."}, or {} for the previous release."""
    chosen, commit = await actions.rollback(operator, ask.domain, ask.release, ask.author)
    return {"release": chosen, "commit": commit}


async def _unpin(operator: Reconciler, ask: Ask) -> dict[str, Any]:
    """Commit the pin's removal like `reconciler unpin`."""
    return {"commit": await actions.unpin(operator, ask.domain, ask.author)}


async def _retry(operator: Reconciler, ask: Ask) -> dict[str, Any]:
    """Forget the remembered failures and build now, like `reconciler retry`."""
    return {"forgotten": await actions.retry(operator, ask.domain, ask.requester)}


async def _redeploy(operator: Reconciler, ask: Ask) -> dict[str, Any]:
    """Build the current commit again as a fresh release, like `reconciler redeploy`."""
    await actions.redeploy(operator, ask.domain, ask.requester)
    return {}


async def release_asked(request: web.Request) -> str | None:
    """A rollback's body: the release named, or None for the previous one. BadBody otherwise."""
    try:
        body = await request.json() if request.can_read_body else {}
    except ValueError:
        raise BadBody(f"the body must be JSON: {_PREVIOUS}") from None
    if not isinstance(body, dict):
        raise BadBody(f"the body must be a JSON object: {_PREVIOUS}")
    release = body.get("release")
    if release is not None and not isinstance(release, str):
        raise BadBody('"release" must be a release name (ddMMYYYY-HHMMSS), or left out for the previous release')
    return release


@dataclass(frozen=True)
class Action:
    """What one action reads from the body (nothing, when None), and what it does: the fields
    of its answer."""

    perform: Callable[[Reconciler, Ask], Awaitable[dict[str, Any]]]
    reads: Callable[[web.Request], Awaitable[str | None]] | None = None


# The route is /api/sites/{domain}/<name>; each name is also what the log and the answer call it.
ACTIONS: dict[str, Action] = {
    "rollback": Action(_rollback, reads=release_asked),
    "unpin": Action(_unpin),
    "retry": Action(_retry),
    "redeploy": Action(_redeploy),
}


def status_of(exc: ReconcilerError) -> int:
    """Why an action was refused, as a status: 404 no such site, 503 cannot check now, 409 else."""
    return 404 if isinstance(exc, UnknownSite) else 503 if isinstance(exc, TemporaryError) else 409


class Actions:
    """The one handler of the operator actions of one app (`handler(name)` for each route)."""

    def __init__(self, ctx: WebContext, guard: Guard) -> None:
        self.ctx, self.guard = ctx, guard

    def handler(self, name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            return await self.act(name, request)
        return handle

    def requester(self, request: web.Request) -> tuple[str, str]:
        """Who asked, for history's `requested_by`: the name of the token the request
        authenticated with (an `[[api_token]]` entry's, or `api_token_name` for the single
        token), whether sent as a bearer token or through a dashboard session; and how
        ("the API" or "the dashboard"), for the log."""
        caller = self.guard.authenticated(request)
        assert caller is not None  # the guard's auth_check let the request through
        return caller.name, "the dashboard" if caller.via == "session" else "the API"

    def operator(self) -> Reconciler:
        """The daemon's reconciler; an app built without one gets one per action, on the current
        settings and the shared store and pool (nothing of its own to close)."""
        return self.ctx.reconciler or Reconciler(self.ctx.settings(), self.ctx.store, self.ctx.pool)

    async def act(self, name: str, request: web.Request) -> web.Response:
        domain = request.match_info["domain"]
        action = ACTIONS[name]
        try:
            release = await action.reads(request) if action.reads is not None else None
        except BadBody as exc:
            return refused(400, str(exc))
        by, through = self.requester(request)
        # A pin commit's author is who asked, so the switch's history row says it as a retry's
        # does ("rollback (alice)"); the committer is the reconciler.
        ask = Ask(domain, by, f"{by} <reconciler@{socket.gethostname()}>", release)
        try:
            result = await action.perform(self.operator(), ask)
        except ReconcilerError as exc:
            status = status_of(exc)
            # The domain is the URL's, whatever it holds: one bounded, printable log line.
            log.info("%s: %s refused from the API (%d): %s", wire.display(domain, 100), name, status,
                     wire.display(str(exc), 300))
            return refused(status, str(exc))
        # What was done; the daemon is woken for the site: it acts now, not at its next poll nor
        # after a backoff, and a pin or unpin just committed goes straight to the lock command's
        # switch (the daemon's dispatch reads the declarations again, so its round holds the pin).
        if self.ctx.asked is not None:
            self.ctx.asked({domain}, "commit" in result)
        else:
            self.ctx.request({domain})
        detail = ", ".join(f"{key} {str(value)[:12]}" for key, value in result.items())
        log.info("%s: %s asked by %s through %s%s", domain, name, by, through, f" ({detail})" if detail else "")
        return web.json_response({"domain": domain, "action": name, "requested_by": by, **result})
