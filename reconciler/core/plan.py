"""The planner's vocabulary and per-server rules: actions, plans, failure memory, pruning,
what a dead run left. `core/rollout.py` plans with them.

Pure: no I/O, no clock (the caller passes `now`), no store, no transport. Every rule of
SPEC section 4 that decides *what* to do lives here; apply.py only decides *how*.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.core.facts import ReleaseFacts, SiteFacts
from reconciler.core.reasons import DeployReason, SwitchReason
from reconciler.core.status import FINAL, DeployStatus, Health, Sync

# Short names for the vocabulary of core.status, which the rules below read like a table.
SYNCED, OUT_OF_SYNC, PROGRESSING = Sync.SYNCED, Sync.OUT_OF_SYNC, Sync.PROGRESSING
FAILED, INVALID, UNKNOWN = Sync.FAILED, Sync.INVALID, Sync.UNKNOWN
HEALTHY, DEGRADED, MISSING = Health.HEALTHY, Health.DEGRADED, Health.MISSING


@dataclass(frozen=True)
class Provision:
    def describe(self) -> str:
        return "provision the layout"


@dataclass(frozen=True)
class Deploy:
    release: str
    commit: str
    # Why, for history (core.reasons.DeployReason). Not part of equality: the same deploy
    # whatever led to it.
    reason: DeployReason | None = field(default=None, compare=False)

    def describe(self) -> str:
        return f"deploy {self.commit[:12]} as release {self.release}"


@dataclass(frozen=True)
class Activate:
    release: str
    reason: SwitchReason  # the planner's: rollback (a pin), roll-forward (back to the ref's build), activate
    # The servers it switches on, when a plan covers many (a dry run says where); not part of equality.
    servers: tuple[str, ...] = field(default=(), compare=False)

    def describe(self) -> str:
        where = f" on {', '.join(self.servers)}" if self.servers else ""
        return f"activate release {self.release} ({self.reason}{where})"


@dataclass(frozen=True)
class Prune:
    releases: tuple[str, ...]

    def describe(self) -> str:
        return "prune " + ", ".join(self.releases)


@dataclass(frozen=True)
class Clean:
    """Remove release dirs a dead process left half-built (manifest still `updating`)."""

    releases: tuple[str, ...]

    def describe(self) -> str:
        return "remove interrupted release " + ", ".join(self.releases)


@dataclass(frozen=True)
class Reload:
    """Run the reload command again for the live release: the one after its switch failed
    (PHP-FPM may still serve the old code through OPcache until a reload succeeds)."""

    release: str
    reason: str  # the failure that is owed a retry

    def describe(self) -> str:
        if self.reason == ENV_CHANGED:
            return f"reload release {self.release} ({ENV_CHANGED})"
        return f"retry the reload of release {self.release} ({self.reason})"


# The reason of a Reload that follows a rewritten shared/.env (`env_change = "reload"`).
ENV_CHANGED = "shared/.env changed"


@dataclass(frozen=True)
class WriteEnv:
    """The server's shared/.env is not the site's env file (a new commit of it, or drift):
    written again, atomically, before anything switches. Only the digest: never the content."""

    digest: str
    # The server had a shared/.env, with other content (a hand edit, or the env file's last commit).
    replaces: bool = field(default=False, compare=False)

    def describe(self) -> str:
        return f"write shared/.env (sha256 {self.digest[:12]})"


@dataclass(frozen=True)
class Relink:
    """Shared links of the live release that are gone or replaced (a deleted `.env` link): drift,
    put back like a moved site symlink."""

    release: str
    entries: tuple[str, ...]

    def describe(self) -> str:
        return f"relink shared {', '.join(self.entries)} in release {self.release} (drift)"


Action = Provision | Clean | WriteEnv | Deploy | Activate | Relink | Reload | Prune


@dataclass(frozen=True)
class Verdict:
    """What a site's planning concluded, whatever the shape of its work: a Plan (one server's
    actions) and a Rollout (the fleet's steps) both are one."""

    sync: Sync
    health: Health
    message: str = ""
    desired_release: str | None = None
    desired_commit: str | None = None
    # Whether the site's app repository answered this round's ref lookup: True, False (its host
    # did not answer or refused), None (not asked: a pin, a commit, no probe).
    head_reached: bool | None = None


@dataclass(frozen=True, kw_only=True)
class Plan(Verdict):
    actions: tuple[Action, ...] = ()

    @property
    def changes(self) -> bool:
        return bool(self.actions)


# How the message of a release that failed its health check after its switch begins (its manifest
# and row say so): its build succeeded, so a `retry` checks it again rather than building anew.
HEALTH_FAILED = "health check failed after switch"


@dataclass(frozen=True)
class FailureMemory:
    """Failed builds of a site, keyed by (commit, build key), with the message to show.
    `rechecks`: releases whose build succeeded and whose health check failed, forgiven by an
    operator's `retry`: switched to (or, live, switched again) and checked, never rebuilt."""

    failed: Mapping[tuple[str, str], str] = field(default_factory=dict)
    rechecks: frozenset[str] = frozenset()

    def get(self, commit: str, build_key: str) -> str | None:
        return self.failed.get((commit, build_key))


# An owner silent for more than this many times the heartbeat bound is surely gone; in between, its
# lock may be taken over (the site moves on) but its half-built releases are left alone.
CLEAN_AFTER_BOUNDS = 2.0


@dataclass(frozen=True)
class Takeover:
    """The site's lock was taken over from its previous owner (remote/lock.py), not found free:
    what was known of that owner then."""

    silent_for: float   # seconds since its last heartbeat (the lock dir's mtime)
    stale_after: float  # the heartbeat bound: a live owner refreshes its lock more often than this
    # An earlier run of this very instance, whose process is gone, with no command of it still
    # heartbeating the lock on the server: it can write nothing any more.
    owner_gone: bool = False


def owner_may_live(takeover: Takeover | None) -> bool:
    """Whether the previous owner of the lock we hold may still be writing the site's releases,
    so that its `updating` release may be a build still under way, not an interrupted one
    (a second reconciler deleted a running deploy's release).

    A lock found free was released by its owner (or by an operator's `unlock`): no. Taken over
    from a run known gone: no. Otherwise the owner stopped refreshing the lock; that makes the
    lock stale, but an owner only just past the bound may be late, not dead (a refresh waiting
    for a session, a clock stepped on the server): its releases wait until it has been silent
    for CLEAN_AFTER_BOUNDS bounds. Waiting costs only disk: an `updating` release is never
    live, never pruned, and a new build takes another name; the next pass that finds the lock
    free cleans it."""
    if takeover is None or takeover.owner_gone:
        return False
    return takeover.silent_for <= CLEAN_AFTER_BOUNDS * takeover.stale_after


def interrupted_releases(facts: SiteFacts, takeover: Takeover | None = None) -> tuple[str, ...]:
    """Releases a dead process left half-built (manifest `updating`, not live) that may be
    removed now: none while the owner we took the lock from may still be building them."""
    if owner_may_live(takeover):
        return ()
    active = facts.active_release
    return tuple(r.name for r in facts.ordered() if r.status == DeployStatus.UPDATING and r.name != active)


def health_of(facts: SiteFacts) -> Health:
    if facts.path_kind == "missing":
        return MISSING
    if facts.active_release is None:
        return DEGRADED
    return HEALTHY


def prune_candidates(
    releases: list[ReleaseFacts], keep: int, active: str | None, pinned: str | None,
    also_keep: tuple[str | None, ...] = (), keep_failed: int = 0,
) -> list[str]:
    """Releases to delete, oldest first. `releases` must be ordered oldest first.

    Keeps the `keep` newest successful releases, the `keep_failed` newest failed ones (their
    logs say why), the active and pinned ones, the newest release whatever its status (its log
    is the latest news), anything still building, and anything whose state is unknown. Failed
    releases do not count towards `keep`. Refuses (returns nothing) while the active release is
    unknown.
    """
    if active is None:
        return []
    protected = {active} | {name for name in (pinned, *also_keep) if name}
    if releases:
        protected.add(releases[-1].name)
    successes = [r.name for r in releases if r.status == DeployStatus.SUCCESS]
    protected.update(successes[-keep:])
    if keep_failed:
        protected.update([r.name for r in releases if r.status == DeployStatus.FAILED][-keep_failed:])
    return [
        r.name for r in releases
        if r.name not in protected and r.status in FINAL
    ]


def built_releases(facts: SiteFacts, commit: str, build_key: str) -> list[str]:
    """The successful builds of (commit, build key) on a server, oldest first."""
    return [r.name for r in facts.ordered() if _successful_build(r, commit, build_key)]


def _successful_build(release: ReleaseFacts, commit: str, build_key: str) -> bool:
    manifest = release.manifest
    return (
        manifest is not None
        and manifest.status == DeployStatus.SUCCESS
        and manifest.commit == commit
        and manifest.build_key == build_key
    )
