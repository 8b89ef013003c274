"""The rollout planner: (site, the facts of every server of it, ref head, failure memory, now) ->
the rollout as data. Pure: no I/O, no clock, no store, no transport.

A site on one server is a fleet of one: the same rules, the same rollout, with one server. A
rollout is one unit with one release name on every server (Capistrano and Deployer switch each
host on its own, so a failure on one leaves a fleet serving two versions):

- `prepare`, per server: provision the layout, clean what a dead run left half-built, relink the
  live release's shared entries that drifted, retry an owed reload;
- `build`: the release, its commit, and the servers that lack a successful build of it (the
  others keep theirs: a retried failure elsewhere never rebuilds them);
- `once`: `script_once` (migrations) on the first server, after its build and before any switch,
  exactly once per release (its manifest says `once: pending` until the step succeeded);
- `switch`: the release goes live on every server not already on it, all or nothing;
- `prune`, per server, as if the rollout succeeded;
- the verdict (sync, health, message) and what is desired.

A deploy window (core/windows.py) holding the move keeps `build`, `once` and `switch` out and says
until when; housekeeping goes on (`_windowed`).

What the executor does with it (locks, commands, undo, what follows a switch) lives in
`engine/`; every rule that decides *what* to do lives here and in `core/plan.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from reconciler.core.declarations import SiteDeclaration, SiteRef
from reconciler.core.facts import BranchHead, ReleaseFacts, SiteFacts
from reconciler.core.layout import next_release_name, parse_release
from reconciler.core.manifest import Manifest
from reconciler.core.plan import (
    ENV_CHANGED,
    Action,
    Activate,
    Clean,
    Deploy,
    FailureMemory,
    Plan,
    Provision,
    Prune,
    Relink,
    Reload,
    Takeover,
    Verdict,
    WriteEnv,
    health_of,
    interrupted_releases,
    prune_candidates,
)
from reconciler.core.reasons import DeployReason, SwitchReason
from reconciler.core.site_env import EMPTY_DIGEST
from reconciler.core.status import DeployStatus, Health, Sync
from reconciler.core.windows import Hold, hold
from reconciler.window_settings import Window

# Worst first: the health a site shows is the worst of its servers'.
_HEALTH_ORDER = (Health.UNKNOWN, Health.MISSING, Health.DEGRADED, Health.HEALTHY)


@dataclass(frozen=True)
class Build:
    """Build `release` of `commit` on `servers` (the servers that lack it), under one name."""

    release: str
    commit: str
    reason: DeployReason
    servers: tuple[str, ...]


@dataclass(frozen=True)
class RunOnce:
    """`script_once` of `release` on `server` (the first listed), before any switch."""

    release: str
    server: str


@dataclass(frozen=True)
class Switch:
    """`release` goes live on `servers` (those not on it now); `previous`: each one's live release
    before, the way back should the switch, or what follows it, fail."""

    release: str
    reason: SwitchReason
    servers: tuple[str, ...]
    previous: Mapping[str, str | None] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, kw_only=True)
class Rollout(Verdict):
    servers: tuple[str, ...]
    prepare: Mapping[str, tuple[Action, ...]] = field(default_factory=dict)
    build: Build | None = None
    once: RunOnce | None = None
    switch: Switch | None = None
    prune: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # The verdict is all there is: nothing may move (facts not trusted, a failure remembered, a
    # ref not resolved, a pinned release missing). Housekeeping in `prepare` may still run.
    halted: bool = False
    # A deploy window holds the move (the verdict says until when); or an override let it through.
    hold: Hold | None = None
    overrode_window: bool = False

    @property
    def changes(self) -> bool:
        return bool(self.build or self.once or self.switch or any(self.prepare.values())
                    or any(self.prune.values()))

    def actions(self, server: str) -> tuple[Action, ...]:
        """What happens on `server`, in order, as the planner's actions (dry runs, history)."""
        done: list[Action] = list(self.prepare.get(server, ()))
        reloads = [a for a in done if isinstance(a, Reload)]
        done = [a for a in done if not isinstance(a, Reload)]
        if self.build is not None and server in self.build.servers:
            done.append(Deploy(self.build.release, self.build.commit, self.build.reason))
        elif self.switch is not None and server in self.switch.servers:
            done.append(Activate(self.switch.release, self.switch.reason))
        done += reloads
        if self.prune.get(server):
            done.append(Prune(self.prune[server]))
        return tuple(done)

    def plan(self, server: str | None = None) -> Plan:
        """The rollout seen from one server (the first by default) as a Plan."""
        return Plan(self.sync, self.health, self.message, self.desired_release, self.desired_commit,
                    self.head_reached, actions=self.actions(server or self.servers[0]))


def plan_rollout(
    site: SiteDeclaration,
    facts: Mapping[str, SiteFacts],
    head: BranchHead | None,
    memory: Mapping[str, FailureMemory],
    now: datetime,
    *,
    clean_interrupted: bool = False,
    fresh_after: datetime | None = None,
    reload_owed: tuple[str, str] | None = None,
    takeover: Mapping[str, Takeover | None] | None = None,
    windows: Sequence[Window] = (),
    override_window: bool = False,
) -> Rollout:
    """`facts`: every server of the site (in its declared order) and what its probe said. `head`:
    what the site's branch or tag points at now (`SiteDeclaration.head_key`), unused for a commit
    site. `memory`: each server's failed builds. `clean_interrupted`: nobody else holds the site's
    locks (they are ours, or free); `takeover`: per server, a lock of ours taken over from another
    owner (`interrupted_releases` says what may then be cleaned). `fresh_after` (a `redeploy`):
    builds named up to that time do not count. `reload_owed` (release, why): that release's reload
    failed after its switch; while it is live and wanted, the reload is retried (Degraded).
    `windows`: the deploy windows (`[[window]]`); `override_window`: they hold nothing this time."""
    return _Planner(site, facts, memory, now, clean_interrupted, fresh_after, reload_owed,
                    takeover or {}, tuple(windows), override_window).plan(head)


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
    """The rollout of a site on one server (`site.server`), as that server's Plan."""
    server = site.server
    return plan_rollout(site, {server: facts}, head, {server: memory}, now, clean_interrupted=clean_interrupted,
                        fresh_after=fresh_after, reload_owed=reload_owed, takeover={server: takeover}).plan(server)


@dataclass
class _Planner:
    site: SiteDeclaration
    facts: Mapping[str, SiteFacts]
    memory: Mapping[str, FailureMemory]
    now: datetime
    clean_interrupted: bool
    fresh_after: datetime | None
    reload_owed: tuple[str, str] | None
    takeover: Mapping[str, Takeover | None]
    windows: tuple[Window, ...] = ()
    override_window: bool = False

    @property
    def servers(self) -> tuple[str, ...]:
        return tuple(self.facts)

    @property
    def many(self) -> bool:
        return len(self.facts) > 1

    def where(self, server: str, text: str) -> str:
        """A server's own words, prefixed with its name when the site has more than one."""
        return f"{server}: {text}" if self.many else text

    def health(self) -> Health:
        return min((health_of(f) for f in self.facts.values()), key=_HEALTH_ORDER.index)

    def verdict(self, sync: Sync, message: str, health: Health | None = None, release: str | None = None,
                commit: str | None = None, prepare: Mapping[str, tuple[Action, ...]] | None = None) -> Rollout:
        return Rollout(sync, health or self.health(), message, release, commit, servers=self.servers,
                       prepare=prepare or {}, halted=True)

    def plan(self, head: BranchHead | None) -> Rollout:
        site = self.site
        for server, facts in self.facts.items():
            if facts.problem is not None:
                # Server data of this site could not be trusted (the probe reader said why): touch nothing.
                return self.verdict(Sync.UNKNOWN, self.where(server, facts.problem), Health.UNKNOWN)
        for server, facts in self.facts.items():
            if facts.path_kind in ("dir", "file"):
                kind = "directory" if facts.path_kind == "dir" else "file"
                return self.verdict(Sync.FAILED, self.where(
                    server, f"{facts.paths.site_link} is a real {kind}, not a symlink; refusing to replace it"),
                    Health.DEGRADED)
        prepare = {server: self._groundwork(server, facts) for server, facts in self.facts.items()}
        if site.env_change == "redeploy" and self.fresh_after is None and self._env_rewritten(prepare) \
                and any(f.active_release is not None for f in self.facts.values()):
            # `env_change = "redeploy"`: a changed .env asks for a fresh release, as `redeploy` does.
            self.fresh_after = self.now
        if site.pin is not None:
            return self._windowed(self._pinned(site.pin, prepare), prepare, pinned=True)
        ref = site.ref
        if ref.kind == "commit":
            commit = ref.name  # the declaration is the desired commit: nothing to resolve, nothing moves
        elif head is None or head.sha is None:
            reason = head.error if head is not None and head.error else "not resolved"
            unresolved = self.verdict(Sync.UNKNOWN, f"cannot resolve {ref.kind} {ref.name!r}: {reason}")
            return replace(unresolved, head_reached=False) if head is not None and head.unreachable else unresolved
        else:
            return self._windowed(replace(self._towards(head.sha, prepare), head_reached=True), prepare)
        return self._windowed(self._towards(commit, prepare), prepare)

    def _windowed(self, rollout: Rollout, prepare: dict[str, tuple[Action, ...]], pinned: bool = False) -> Rollout:
        """`rollout`, unless a deploy window holds its move (a build, a run-once step, a switch;
        a live release checked again is no move). Held, the site stays on its live release,
        whose housekeeping goes on; with no one live release (a first deploy, servers apart),
        only `prepare` runs."""
        switch = rollout.switch
        moves = rollout.build is not None or rollout.once is not None or (
            switch is not None and switch.reason != SwitchReason.RETRY)
        held = hold(self.windows, self.site.domain, self.now, pinned=pinned) if moves else None
        if held is None:
            return rollout
        if self.override_window:
            return replace(rollout, overrode_window=True)
        lives = {facts.active_release for facts in self.facts.values()}
        live = next(iter(lives)) if len(lives) == 1 else None
        found = [facts.releases.get(live) for facts in self.facts.values()] if live is not None else [None]
        if live is None or any(r is None for r in found):
            return replace(self.verdict(Sync.OUT_OF_SYNC, held.message, commit=rollout.desired_commit,
                                        prepare=prepare), hold=held, head_reached=rollout.head_reached)
        staying = self._settle(live, SwitchReason.ROLL_FORWARD, found[0].commit if found[0] else None, prepare)
        return replace(staying, sync=Sync.OUT_OF_SYNC, message=held.message, desired_commit=rollout.desired_commit,
                       head_reached=rollout.head_reached, hold=held)

    def _groundwork(self, server: str, facts: SiteFacts) -> tuple[Action, ...]:
        work: list[Action] = []
        if not facts.provisioned or not facts.shared:
            work.append(Provision())
        if self.clean_interrupted and (interrupted := interrupted_releases(facts, self.takeover.get(server))):
            work.append(Clean(interrupted))
        env = self.site.env
        if env is not None and facts.env_digest != env.digest:
            work.append(WriteEnv(env.digest, replaces=facts.env_digest not in (None, EMPTY_DIGEST)))
        return tuple(work)

    @staticmethod
    def _env_rewritten(prepare: Mapping[str, tuple[Action, ...]]) -> bool:
        return any(isinstance(a, WriteEnv) for steps in prepare.values() for a in steps)

    def _pinned(self, pin: str, prepare: dict[str, tuple[Action, ...]]) -> Rollout:
        lacking = {server: facts.releases.get(pin) for server, facts in self.facts.items()
                   if facts.releases.get(pin) is None or facts.releases[pin].status != DeployStatus.SUCCESS}
        if lacking:
            if not self.many:
                found = next(iter(lacking.values()))
                why = "does not exist" if found is None else f"is not a successful release ({found.status})"
                message = f"pinned release {pin} {why} on {self.site.server}; nothing deployed in its place"
            else:
                message = f"pinned release {pin} is not a successful build on {', '.join(lacking)}; " \
                          "nothing switched on any server"
            return self.verdict(Sync.OUT_OF_SYNC, message, Health.DEGRADED, pin)
        first = self.servers[0]
        if self._once_owed(first, pin):
            return self.verdict(Sync.OUT_OF_SYNC, f"pinned release {pin} never completed its script_once on "
                                f"{first}; nothing switched on any server", Health.DEGRADED, pin)
        return self._settle(pin, SwitchReason.ROLLBACK, self.facts[first].releases[pin].commit, prepare)

    def _towards(self, commit: str, prepare: dict[str, tuple[Action, ...]]) -> Rollout:
        site = self.site
        built = {server: [r.name for r in facts.ordered() if (_successful_build(r, commit, site.build_key)
                                                              or self._recheck(server, r, commit))
                          and (self.fresh_after is None or _built_after(r.name, self.fresh_after))]
                 for server, facts in self.facts.items()}
        first = self.servers[0]
        everywhere = [name for name in built[first] if all(name in names for names in built.values())]
        actives = {facts.active_release for facts in self.facts.values()}
        if len(actives) == 1 and (live := next(iter(actives))) is not None and live in everywhere:
            if self._rechecked(live):
                # Still live after its failed check (there was nothing to return to): checked again.
                return self._settle(live, SwitchReason.RETRY, commit, prepare, again=True)
            return self._settle(live, SwitchReason.ROLL_FORWARD, commit, prepare)
        somewhere = sorted({name for names in built.values() for name in names}, key=_release_time)
        name = everywhere[-1] if everywhere else (somewhere[-1] if somewhere else None)
        if name is None:
            failed = [(server, why) for server in self.servers
                      if (why := self.memory.get(server, FailureMemory()).get(commit, site.build_key)) is not None]
            if failed:
                return self.verdict(Sync.FAILED, self._failure_message(commit, failed), commit=commit,
                                    prepare=prepare)
            existing = {n for facts in self.facts.values() for n in (*facts.releases, *facts.not_dirs)}
            name = next_release_name(self.now, sorted(existing))
        need = tuple(server for server in self.servers if name not in built[server])
        failed = [(server, why) for server in need
                  if (why := self.memory.get(server, FailureMemory()).get(commit, site.build_key)) is not None]
        if failed:
            # A failed build is not retried for the same commit and build key (no hot loop): a new
            # commit, a declaration change or `reconciler retry` tries again.
            return self.verdict(Sync.FAILED, self._failure_message(commit, failed), commit=commit, prepare=prepare)
        once = site.script_once is not None and (first in need or self._once_owed(first, name))
        if not need and not once:
            reason = SwitchReason.ROLL_FORWARD if self.facts[first].active_release is not None \
                else SwitchReason.ACTIVATE
            return self._settle(name, SwitchReason.RETRY if self._rechecked(name) else reason, commit, prepare)
        build = None
        if need:
            current = self.facts[first].releases.get(self.facts[first].active_release or "")
            build = Build(name, commit, _deploy_reason(site, current, commit), need)
        # A release built earlier whose run-once step is still owed completes its deploy now.
        return self._settle(name, SwitchReason.DEPLOY, commit, prepare, build,
                            RunOnce(name, first) if once else None)

    def _failure_message(self, commit: str, failed: Sequence[tuple[str, str]]) -> str:
        if not self.many:
            return f"{failed[0][1]} (commit {commit[:12]}; waiting for a new commit or declaration change)"
        return "; ".join(f"{server}: {why} (commit {commit[:12]}; waiting for a new commit or declaration change)"
                         for server, why in failed) + "; no server switched"

    def _recheck(self, server: str, release: ReleaseFacts, commit: str) -> bool:
        """`release` on `server` was built from `commit` and failed only its health check, and an
        operator's `retry` forgave it: it counts as built (checked again, never rebuilt)."""
        manifest = release.manifest
        return (release.name in self.memory.get(server, FailureMemory()).rechecks and manifest is not None
                and manifest.commit == commit and manifest.build_key == self.site.build_key)

    def _rechecked(self, name: str) -> bool:
        """`name` is to be checked again on some server (its manifest there still says failed)."""
        return any(name in self.memory.get(server, FailureMemory()).rechecks for server in self.servers)

    def _settle(self, target: str, reason: SwitchReason, commit: str | None, prepare: dict[str, tuple[Action, ...]],
                build: Build | None = None, once: RunOnce | None = None, *, again: bool = False) -> Rollout:
        """Every server ends on `target` (built first where `build` says, its run-once step run
        where `once` says): relink drifted shared entries where it is live, switch where it is
        not (everywhere when `again`: a live release checked again goes through the switch and
        what follows it, with nothing to return to), retry an owed reload, prune."""
        site = self.site
        health = self.health()
        moving = tuple(server for server, facts in self.facts.items() if again or facts.active_release != target)
        owed = self.reload_owed
        retry_reload = not moving and owed is not None and owed[0] == target and bool(site.reload_command)
        work = {}
        for server, facts in self.facts.items():
            steps = list(prepare[server])
            if facts.active_release == target and facts.unlinked:
                steps.append(Relink(target, tuple(facts.unlinked)))
            if retry_reload and owed is not None:
                steps.append(Reload(target, owed[1]))
            elif server not in moving and site.env_change == "reload" and site.reload_command \
                    and facts.active_release == target and any(isinstance(a, WriteEnv) for a in steps):
                # The live release stays: it reads the new .env once reloaded (a switch reloads anyway).
                steps.append(Reload(target, ENV_CHANGED))
            work[server] = tuple(steps)
        if retry_reload:
            health = Health.DEGRADED if health == Health.HEALTHY else health
        prune = {server: names for server in self.servers
                 if (names := self._prunable(server, target, build))}
        switch = Switch(target, reason, moving, {s: None if again else self.facts[s].active_release
                                                 for s in moving}) if moving else None
        # The live release is the desired one while only housekeeping or an owed reload remains.
        pending = build is not None or once is not None or switch is not None or \
            any(isinstance(a, Provision | Relink | WriteEnv) for steps in work.values() for a in steps)
        message = f"reload of the live release failed ({owed[1]}); retrying" if retry_reload and owed else ""
        return Rollout(Sync.OUT_OF_SYNC if pending else Sync.SYNCED, health, message, target, commit,
                       servers=self.servers, prepare=work, build=build, once=once, switch=switch, prune=prune)

    def _prunable(self, server: str, target: str, build: Build | None) -> tuple[str, ...]:
        """Prune as if the rollout succeeded; the executor prunes only after a success (SPEC 4.5),
        so a site that deploys every pass still prunes. Around a build, the release live before
        stays too: it is the immediate way back."""
        facts = self.facts[server]
        ordered = facts.ordered()
        also_keep: tuple[str | None, ...] = ()
        if build is not None:
            also_keep = (facts.active_release,)
            if server in build.servers:
                ordered = [*ordered, ReleaseFacts(target, Manifest(build.commit, self.site.ref.record,
                                                                   self.site.repository, self.site.build_key,
                                                                   DeployStatus.SUCCESS))]
        return tuple(prune_candidates(ordered, self.site.keep, target, self.site.pin, also_keep,
                                      keep_failed=self.site.keep_failed))

    def _once_owed(self, server: str, name: str) -> bool:
        """`name` on `server` (the first) still owes its run-once step: its manifest says pending."""
        found = self.facts[server].releases.get(name)
        return (self.site.script_once is not None and found is not None and found.manifest is not None
                and found.manifest.once_owed)


def _release_time(name: str) -> tuple[bool, datetime | None, str]:
    at = parse_release(name)
    return (at is not None, at, name)


def _successful_build(release: ReleaseFacts, commit: str, build_key: str) -> bool:
    manifest = release.manifest
    return (manifest is not None and manifest.status == DeployStatus.SUCCESS and manifest.commit == commit
            and manifest.build_key == build_key)


def _built_after(release: str, moment: datetime) -> bool:
    built = parse_release(release)
    return built is not None and built > moment


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
