"""What happened to one site in one pass, and the ONE mapping from an exception to it.

Every exception raised while working on a site, typed or not, becomes that site's
`SiteOutcome` in `outcome_of` (like kopf's `execute_handler_once`): it is never raised to
sibling sites, to the server's task or to the pass. The retry policy is data on the
outcome (`retry_after`, `backoff`), decided by the error's type, and callers (the CLI pass
and the daemon) only read it.

    SiteLocked        -> Progressing, retry after the lock's delay (no backoff)
    TemporaryError    -> Unknown, retry with backoff (server unreachable, lost connection)
    LayoutConflict    -> Failed, wait for a change (something we must not touch is in the way)
    PermanentError    -> Failed with the step, exit status and output: wait for a change
    anything else     -> Unknown with the exception text, logged once with its traceback,
                         retried with backoff (a bug must not freeze the site forever)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from reconciler.core.plan import Action, Activate, Deploy
from reconciler.core.reasons import SwitchReason
from reconciler.core.status import Health, Sync
from reconciler.errors import LayoutConflict, PermanentError, SiteLocked, TemporaryError, TransportError

log = logging.getLogger(__name__)

LOCK_RETRY = 2.0       # another reconciler holds the site: look again shortly
RELOAD_RETRY = 5.0     # seconds before the first retry of a failed reload (then doubling, as for errors)
BACKOFF_START = 5.0    # first retry of a temporary error; the daemon doubles it up to its cap

# Unexpected errors already logged with a traceback: (domain, type, text). Bounded so a
# long-running daemon with a flapping bug does not grow it without end.
_LOGGED: dict[tuple[str, str, str], None] = {}
_LOGGED_MAX = 1024


@dataclass(frozen=True)
class Applied:
    """An action carried out on a site, and how it ended."""

    action: Action
    failed: bool = False
    superseded: bool = False  # built fine, but a newer declaration landed: left unswitched
    note: str = ""

    def describe(self) -> str:
        if isinstance(self.action, Deploy) and self.failed:
            return f"deploy {self.action.release} failed"
        if isinstance(self.action, Deploy) and self.superseded:
            return f"built {self.action.release}; not switched: {self.note}"
        if self.failed:
            return f"{self.action.describe()} failed"
        return self.action.describe()


@dataclass
class SiteOutcome:
    """One site after one pass: its verdict, what was done, and when to look again."""

    domain: str
    server: str
    sync: Sync
    health: Health
    message: str = ""
    applied: list[Applied] = field(default_factory=list)
    planned: list[Action] = field(default_factory=list)  # --dry-run: what would be done
    retry_after: float | None = None  # None: wait for a change (or the next poll)
    backoff: bool = False             # retry_after is the first step of an exponential backoff
    unreachable: tuple[str, ...] = ()  # the servers that could not be reached (a TransportError)
    repository_reached: bool | None = None  # the app repository answered its ref lookup (Verdict.head_reached)
    held_until: datetime | None = None  # held by a deploy window until then (core/windows.py)

    @property
    def actions(self) -> list[str]:
        """Human-readable lines, for the CLI and the log; decisions use `applied`."""
        if self.planned:
            return [a.describe() for a in self.planned]
        return [a.describe() for a in self.applied]

    @property
    def deployed(self) -> bool:
        return self.sync == Sync.SYNCED and any(
            isinstance(a.action, Deploy) and not a.failed and not a.superseded for a in self.applied)

    @property
    def rolled_back(self) -> bool:
        return any(isinstance(a.action, Activate)
                   and a.action.reason in (SwitchReason.ROLLBACK, SwitchReason.AUTO_ROLLBACK) for a in self.applied)

    @property
    def switched(self) -> bool:
        """The site symlink was moved to the desired release during this round."""
        return any(not a.failed and not a.superseded and isinstance(a.action, Deploy | Activate)
                   for a in self.applied)

    @property
    def superseded(self) -> bool:
        return any(a.superseded for a in self.applied)


def outcome_of(exc: BaseException, domain: str, server: str, health: Health = Health.UNKNOWN,
               applied: list[Applied] | None = None) -> SiteOutcome:
    """The outcome of a site whose work raised `exc`. `health` is what the facts said before
    (a failed step leaves the live release as it was). Never raises."""
    done = list(applied or [])
    if isinstance(exc, SiteLocked):
        return SiteOutcome(domain, server, Sync.PROGRESSING, health, str(exc), done,
                           retry_after=exc.delay or LOCK_RETRY)
    if isinstance(exc, TemporaryError):
        down = (server,) if isinstance(exc, TransportError) else ()
        return SiteOutcome(domain, server, Sync.UNKNOWN, Health.UNKNOWN, str(exc), done,
                           retry_after=exc.delay or BACKOFF_START, backoff=True, unreachable=down)
    if isinstance(exc, LayoutConflict):
        return SiteOutcome(domain, server, Sync.FAILED, Health.DEGRADED, str(exc), done)
    if isinstance(exc, PermanentError):
        return SiteOutcome(domain, server, Sync.FAILED, health, str(exc), done)
    text = f"{type(exc).__name__}: {exc}"[:500]
    key = (domain, type(exc).__name__, text)
    if key not in _LOGGED:
        if len(_LOGGED) >= _LOGGED_MAX:
            _LOGGED.pop(next(iter(_LOGGED)))
        _LOGGED[key] = None
        log.error("%s: unexpected error", domain, exc_info=exc)
    return SiteOutcome(domain, server, Sync.UNKNOWN, Health.UNKNOWN, f"unexpected error: {text}", done,
                       retry_after=BACKOFF_START, backoff=True)
