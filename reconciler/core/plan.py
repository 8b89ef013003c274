"""The planner: (site, facts, ref head, failure memory, now) -> actions and a verdict.

Pure: no I/O, no clock (the caller passes `now`), no store, no transport. Every rule of
SPEC section 4 that decides *what* to do lives here; apply.py only decides *how*.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from reconciler.core.declarations import SiteDeclaration, SiteRef
from reconciler.core.facts import BranchHead, ReleaseFacts, SiteFacts
from reconciler.core.layout import next_release_name, parse_release
from reconciler.core.manifest import Manifest
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
        return f"retry the reload of release {self.release} ({self.reason})"


@dataclass(frozen=True)
class Relink:
    """Shared links of the live release that are gone or replaced (a deleted `.env` link): drift,
    put back like a moved site symlink."""

    release: str
    entries: tuple[str, ...]

    def describe(self) -> str:
        return f"relink shared {', '.join(self.entries)} in release {self.release} (drift)"


Action = Provision | Clean | Deploy | Activate | Relink | Reload | Prune


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    sync: Sync
    health: Health
    message: str = ""
    desired_release: str | None = None
    desired_commit: str | None = None

    @property
    def changes(self) -> bool:
        return bool(self.actions)


@dataclass(frozen=True)
class FailureMemory:
    """Failed builds of a site, keyed by (commit, build key), with the message to show."""

    failed: Mapping[tuple[str, str], str] = field(default_factory=dict)

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
    (security review 2, N5: a second reconciler deleted a running deploy's release).

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


def _built_after(release: str, moment: datetime) -> bool:
    built = parse_release(release)
    return built is not None and built > moment


def plan_site(
    site: SiteDeclaration,
    facts: SiteFacts,
    head: BranchHead | None,
    memory: FailureMemory,
    now: datetime,
    clean_interrupted: bool = False,
    fresh_after: datetime | None = None,
    reload_owed: tuple[str, str] | None = None,
    takeover: Takeover | None = None,
) -> Plan:
    """`head`: what the site's branch or tag points at now (`SiteDeclaration.head_key`, probed);
    not used for a commit site, whose declaration is the commit.
    `clean_interrupted`: nobody else holds the site's lock (it is ours, or free); `takeover`: it
    is ours, taken over from another owner (`interrupted_releases` says what may be cleaned).
    `fresh_after` (a `redeploy` request: the time the newest release then encoded): a build of
    the head named up to it does not count, so the head is built again as a fresh release.
    `reload_owed` (release, why): that release's reload failed after its switch; while it is
    live and wanted, the reload is retried and the site is Degraded with the reason."""
    if facts.problem is not None:
        # Server data of this site could not be trusted (remote.probe said why): touch nothing.
        return Plan((), UNKNOWN, Health.UNKNOWN, facts.problem)
    paths = facts.paths
    active = facts.active_release
    health = health_of(facts)
    if facts.path_kind in ("dir", "file"):
        kind = "directory" if facts.path_kind == "dir" else "file"
        return Plan((), FAILED, DEGRADED,
                    f"{paths.site_link} is a real {kind}, not a symlink; refusing to replace it")

    actions: list[Action] = []
    if not facts.provisioned or not facts.shared:
        actions.append(Provision())
    if clean_interrupted:
        interrupted = interrupted_releases(facts, takeover)
        if interrupted:
            actions.append(Clean(interrupted))

    def settle(target: str, reason: SwitchReason) -> None:
        nonlocal health
        if active == target and facts.unlinked:
            actions.append(Relink(target, tuple(facts.unlinked)))
        if active != target:
            actions.append(Activate(target, reason))  # an activation reloads anyway
        elif reload_owed is not None and reload_owed[0] == target and site.reload_command:
            actions.append(Reload(target, reload_owed[1]))
            health = DEGRADED
        candidates = prune_candidates(facts.ordered(), site.keep, target, site.pin, keep_failed=site.keep_failed)
        if candidates:
            actions.append(Prune(tuple(candidates)))

    if site.pin is not None:
        pinned = facts.releases.get(site.pin)
        if pinned is None or pinned.status != DeployStatus.SUCCESS:
            why = "does not exist" if pinned is None else f"is not a successful release ({pinned.status})"
            return Plan((), OUT_OF_SYNC, DEGRADED,
                        f"pinned release {site.pin} {why} on {site.server}; nothing deployed in its place",
                        site.pin, None)
        settle(site.pin, SwitchReason.ROLLBACK)
        return _verdict(actions, site.pin, pinned.commit, health)

    ref = site.ref
    if ref.kind == "commit":
        commit = ref.name  # the declaration is the desired commit: nothing to resolve, nothing moves
    elif head is None or head.sha is None:
        reason = head.error if head is not None and head.error else "not resolved"
        return Plan((), UNKNOWN, health, f"cannot resolve {ref.kind} {ref.name!r}: {reason}")
    else:
        commit = head.sha
    built = [r for r in facts.ordered() if _successful_build(r, commit, site.build_key)
             and (fresh_after is None or _built_after(r.name, fresh_after))]
    if built:
        target = active if active in {r.name for r in built} else built[-1].name
        assert target is not None
        settle(target, SwitchReason.ROLL_FORWARD if active is not None else SwitchReason.ACTIVATE)
        return _verdict(actions, target, commit, health)

    failure = memory.get(commit, site.build_key)
    if failure is not None:
        return Plan(tuple(actions), FAILED, health,
                    f"{failure} (commit {commit[:12]}; waiting for a new commit or declaration change)",
                    None, commit)
    release = next_release_name(now, [*facts.releases, *facts.not_dirs])
    live = facts.releases.get(active) if active is not None else None
    actions.append(Deploy(release, commit, _deploy_reason(site, live, commit)))
    # Prune as if the deploy succeeded; the applier stops at a failed deploy, so this only
    # runs after a success (SPEC 4.5), and a site that deploys every pass still prunes.
    built_now = ReleaseFacts(release, Manifest(commit, ref.record, site.repository, site.build_key,
                                               DeployStatus.SUCCESS))
    # The release live before the switch stays too: it is the immediate way back.
    candidates = prune_candidates([*facts.ordered(), built_now], site.keep, release, site.pin, (active,),
                                  keep_failed=site.keep_failed)
    if candidates:
        actions.append(Prune(tuple(candidates)))
    return _verdict(actions, release, commit, health)


def _deploy_reason(site: SiteDeclaration, live: ReleaseFacts | None, commit: str) -> DeployReason:
    """Why a deploy happens, for history: a first deploy; a declaration (the same commit with
    another script or shared list, or a tag or commit site now naming another ref); a tag moved
    (the tag the live release was built from now names another commit: followed, and said so);
    an app commit (a branch site's branch moved)."""
    if live is None:
        return DeployReason.FIRST_DEPLOY
    if live.commit == commit:
        return DeployReason.DECLARATION
    ref = site.ref
    if ref.kind == "branch":
        return DeployReason.APP_COMMIT
    built_from = SiteRef.from_record(live.manifest.branch) if live.manifest is not None else None
    return DeployReason.TAG_MOVED if ref.kind == "tag" and built_from == ref else DeployReason.DECLARATION


def _verdict(actions: list[Action], release: str, commit: str | None, health: Health) -> Plan:
    # The live release is the desired one while only housekeeping or an owed reload remains.
    pending = [a for a in actions if not isinstance(a, Prune | Clean | Reload)]
    sync = OUT_OF_SYNC if pending else SYNCED
    owed = next((a for a in actions if isinstance(a, Reload)), None)
    message = f"reload of the live release failed ({owed.reason}); retrying" if owed else ""
    return Plan(tuple(actions), sync, health, message, release, commit)
