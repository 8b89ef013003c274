"""Which `[[notify]]` events a site's round causes, as data: `news` is a pure function from the
round's outcome, and what the daemon knew of the site, to notices: send this event (its fields,
and the key that makes it once-only), or forget that one (it is news again next time).

Pure: no I/O, no clock, no store. The daemon reads the rows (`Known`), calls `news` and hands
each notice to webhooks.Notifications, which deduplicates by the key and delivers;
announce.py says what each event contains. The rules, in the order the notices come:

* deployed: the round deployed; once per live commit.
* rolled_back: the round switched back (an operator's rollback or an automatic one); each time.
* failed: while the site is Failed; once per (desired commit, build key), keyed like the
  failure memory so the follow-up passes' longer message is not news (once per message when no
  commit is desired). Forgotten as soon as the site is not Failed.
* degraded: while the site is Degraded; once. Forgotten as soon as it is not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.config import NotifyEvent
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


@dataclass(frozen=True)
class Send:
    """Send `event` with `fields` (announce.FIELDS), unless one with the same `once_key` was sent."""

    event: NotifyEvent
    fields: dict[str, Any] = field(default_factory=dict)
    once_key: str = ""


@dataclass(frozen=True)
class Forget:
    """The site left the state `event` is about: the next `event` is news again."""

    event: NotifyEvent


Notice = Send | Forget


def needs_history(outcome: SiteOutcome) -> bool:
    """Whether `news` reads `Known.history` for this outcome (the daemon reads it only then)."""
    return outcome.sync == Sync.FAILED


def news(outcome: SiteOutcome, known: Known) -> list[Notice]:
    """The notices of one site's round (the module docstring says the rules)."""
    live, commit = known.row.get("active_release"), known.row.get("active_commit")
    scene = announce.Scene(outcome.domain, known.server, outcome.sync, outcome.health, outcome.message, live,
                           commit, live=known.live, previous=known.previous, endpoint=known.endpoint)
    notices: list[Notice] = []
    if outcome.deployed:
        notices.append(Send(NotifyEvent.DEPLOYED, announce.fields(NotifyEvent.DEPLOYED, scene), str(commit)))
    if outcome.rolled_back:
        notices.append(Send(NotifyEvent.ROLLED_BACK, announce.fields(NotifyEvent.ROLLED_BACK, scene)))
    if outcome.sync == Sync.FAILED:
        desired = known.row.get("desired_commit")
        key = f"{desired}/{known.build_key}" if desired else outcome.message
        failed = announce.failed_build(known.history, outcome.applied, desired, known.build_key)
        notices.append(Send(NotifyEvent.FAILED, announce.fields(NotifyEvent.FAILED, scene, failed, desired), key))
    else:
        notices.append(Forget(NotifyEvent.FAILED))
    if outcome.health == Health.DEGRADED:
        notices.append(Send(NotifyEvent.DEGRADED, announce.fields(NotifyEvent.DEGRADED, scene), "degraded"))
    else:
        notices.append(Forget(NotifyEvent.DEGRADED))
    return notices
