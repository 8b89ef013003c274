"""Which `[[notify]]` events a site's round causes, as data: `news` is a pure function from the
round's outcome, and what was known of the site, to notices: send this event (its fields, and
the key that makes it once-only), or forget that one (it is news again next time; when the
state it was about ended well, forgetting it is itself news: `recovered`). `declarations` is the
same for a fetch of the declarations repository.

Pure: no I/O, no clock, no store. service/herald.py reads the rows (`Known`), calls these for the
daemon and the CLI alike, claims each notice in the state database (engine/notice_memory.py: once
across processes) and hands it to webhooks.Notifications, which delivers; announce.py says what
each event contains. The rules, in the order the notices come:

* unreachable: a server of the site could not be reached (a TransportError); once per outage of
  that server, whatever the number of its sites (scope "server NAME", no domain). Forgotten when
  a round reaches it again, with `recovered` (the server, no domain).

* deployed: the round deployed; once per live commit.
* rolled_back: the round switched back (an operator's rollback or an automatic one); each time.
* failed: while the site is Failed; once per (desired commit, build key), keyed like the
  failure memory so the follow-up passes' longer message is not news (once per message when no
  commit is desired). Forgotten as soon as the site is neither Failed nor Unknown (an outage in
  between is no new failure); with `recovered` when it is Synced.
* degraded: while the site is Degraded; once. Forgotten as soon as it is neither Degraded nor
  Unknown; with `recovered` when it is Healthy.
* unreachable, an app repository: the round's ref lookup got no answer from its host (or was
  refused); once per outage of that repository, whatever the number of sites deployed from it
  (scope "repository HOST/PATH"). Forgotten, with `recovered`, when a lookup is answered.

* declarations (`declarations`): the repository's Git host could not be fetched: `unreachable`
  once per outage (scope "declarations"); the first fetch that succeeds: `recovered`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.config import NotifyEvent
from reconciler.core.repository_url import repository_key
from reconciler.core.status import Health, Sync
from reconciler.engine.outcome import SiteOutcome
from reconciler.service import announce

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Known:
    """What the daemon knows of a site after its round, besides the outcome."""

    server: str                  # the declaration's server (its first, on many)
    build_key: str               # what makes two builds of one commit the same build
    row: Row                     # the site's state row after the round ({} when there is none)
    live: Row | None = None      # the deployment row of the live release
    previous: tuple[str | None, str | None] | None = None  # (release, commit) live at the last look
    history: Sequence[Row] = ()  # the site's deployments, newest first; read only when needs_history
    endpoint: str | None = None  # http://authority of the dashboard, for links
    servers: tuple[str, ...] = ()  # every server of the site (its `server` when empty)
    repository: str = ""         # the site's app repository, as declared


DECLARATIONS = "declarations"  # the scope of the declarations repository's outage


def server_scope(server: str) -> str:
    """The scope of a server's outage: one for all its sites."""
    return f"server {server}"


def repository_scope(repository: str) -> str:
    """The scope of an app repository's outage: one for every site deployed from it, however
    each declares its URL (compared by host and path)."""
    return f"repository {repository_key(repository)}"


@dataclass(frozen=True)
class Send:
    """Send `event` with `fields` (announce.FIELDS), unless one with the same `once_key` was sent
    in its scope. `scope` None: the site's own (the event names the domain); else a cause's
    (the event names no domain)."""

    event: NotifyEvent
    fields: dict[str, Any] = field(default_factory=dict)
    once_key: str = ""
    scope: str | None = None


@dataclass(frozen=True)
class Forget:
    """The site (or the cause of `scope`) left the state `event` is about: the next `event` is
    news again. `recovered`: the fields of the `recovered` event to send if `event` had been sent
    (the state ended well), None to send nothing."""

    event: NotifyEvent
    scope: str | None = None
    recovered: dict[str, Any] | None = None


Notice = Send | Forget


def needs_history(outcome: SiteOutcome) -> bool:
    """Whether `news` reads `Known.history` for this outcome (the daemon reads it only then)."""
    return outcome.sync == Sync.FAILED


def news(outcome: SiteOutcome, known: Known) -> list[Notice]:
    """The notices of one site's round (the module docstring says the rules)."""
    live, commit = known.row.get("active_release"), known.row.get("active_commit")
    scene = announce.Scene(outcome.domain, known.server, outcome.sync, outcome.health, outcome.message, live,
                           commit, live=known.live, previous=known.previous, endpoint=known.endpoint)
    notices: list[Notice] = reachability(outcome, known)
    if outcome.deployed:
        notices.append(Send(NotifyEvent.DEPLOYED, announce.fields(NotifyEvent.DEPLOYED, scene), str(commit)))
    if outcome.rolled_back:
        notices.append(Send(NotifyEvent.ROLLED_BACK, announce.fields(NotifyEvent.ROLLED_BACK, scene)))
    if outcome.sync == Sync.FAILED:
        desired = known.row.get("desired_commit")
        key = f"{desired}/{known.build_key}" if desired else outcome.message
        failed = announce.failed_build(known.history, outcome.applied, desired, known.build_key)
        notices.append(Send(NotifyEvent.FAILED, announce.fields(NotifyEvent.FAILED, scene, failed, desired), key))
    elif outcome.sync != Sync.UNKNOWN:
        well = outcome.sync == Sync.SYNCED
        notices.append(Forget(NotifyEvent.FAILED, recovered=_recovered(scene, "failed") if well else None))
    if outcome.health == Health.DEGRADED:
        notices.append(Send(NotifyEvent.DEGRADED, announce.fields(NotifyEvent.DEGRADED, scene), "degraded"))
    elif outcome.health != Health.UNKNOWN:
        well = outcome.health == Health.HEALTHY
        notices.append(Forget(NotifyEvent.DEGRADED, recovered=_recovered(scene, "degraded") if well else None))
    return notices


def reachability(outcome: SiteOutcome, known: Known) -> list[Notice]:
    """`unreachable` for each server of the site the round could not reach; a forget (with
    `recovered`) for each it reached. A round that failed otherwise before reaching its
    servers (a temporary error that is no connection problem) says nothing of them."""
    down = set(outcome.unreachable)
    reached = not outcome.backoff or bool(down)
    notices: list[Notice] = []
    for server in known.servers or (known.server,):
        scope = server_scope(server)
        if server in down:
            fields = announce.cause_fields(server, outcome.message, known.endpoint)
            notices.append(Send(NotifyEvent.UNREACHABLE, fields, "down", scope))
        elif reached:
            back = announce.cause_fields(server, "reachable again", known.endpoint)
            notices.append(Forget(NotifyEvent.UNREACHABLE, scope, back))
    if known.repository and outcome.repository_reached is not None:
        scope = repository_scope(known.repository)
        if outcome.repository_reached:
            back = announce.cause_fields(None, "reachable again", known.endpoint, repository=known.repository)
            notices.append(Forget(NotifyEvent.UNREACHABLE, scope, back))
        else:
            outage = announce.cause_fields(None, outcome.message, known.endpoint, repository=known.repository)
            notices.append(Send(NotifyEvent.UNREACHABLE, outage, "down", scope))
    return notices


def declarations(problem: str, endpoint: str | None = None) -> list[Notice]:
    """The notices of one fetch of the declarations repository: `problem` is why it failed,
    "" when it succeeded."""
    if problem:
        return [Send(NotifyEvent.UNREACHABLE, announce.cause_fields(None, problem, endpoint), "down", DECLARATIONS)]
    back = announce.cause_fields(None, "declarations repository reachable again", endpoint)
    return [Forget(NotifyEvent.UNREACHABLE, DECLARATIONS, back)]


def _recovered(scene: announce.Scene, was: str) -> dict[str, Any]:
    return {**announce.fields(NotifyEvent.RECOVERED, scene), "reason": was}
