"""The one rollout executor: every site, on one server or many, converges here.

    facts of every server -> plan_rollout -> (nothing to do: record) -> a slot of the global
    limit -> every server's lock, taken in one order -> plan_rollout again from the facts read
    under the locks -> prepare -> build -> run once -> switch -> after_switch -> prune

A site on one server is a fleet of one, through the same steps. Two steps are carried by a
neighbouring command when that saves a round trip, never written twice: on a fleet of one with
no run-once step, the build's finishing command also switches (`apply.deploy(switch_to_it=)`);
a pin or unpin that just landed is switched by the lock command itself (`held(activate=)`).
Either way `_switch` is where a switch is decided and done, and `after_switch` (reload, health,
switch-back, history) is what follows every switch: deploys, pins, unpins, redeploys, drift
corrections and automatic rollbacks alike.

Every exception met while working on a site becomes that site's outcome (`outcome.outcome_of`):
nothing one site does reaches another.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from reconciler.core.declarations import SiteDeclaration
from reconciler.core.facts import BranchHead, SiteFacts
from reconciler.core.layout import parse_release
from reconciler.core.manifest import ONCE_DONE, ONCE_PENDING, Manifest
from reconciler.core.plan import Activate, Clean, Deploy, Provision, Prune, Relink, Reload, health_of
from reconciler.core.reasons import RequestKind, SwitchReason
from reconciler.core.rollout import Rollout, plan_rollout
from reconciler.core.status import UNFINISHED, DeployStatus, Health, Step, Sync
from reconciler.engine import apply, record
from reconciler.engine.adoption import adopt
from reconciler.engine.outcome import RELOAD_RETRY, Applied, SiteOutcome, outcome_of
from reconciler.engine.record import Board, label
from reconciler.engine.rows import RequestRow
from reconciler.engine.store import Snapshot, utcnow
from reconciler.engine.workbench import Workbench, group_key
from reconciler.errors import LayoutConflict, LockNotReleased, PermanentError, StepFailed
from reconciler.remote import lock, shell
from reconciler.remote.health import HealthResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shortcut:
    """A pin or an unpin that just landed on a fleet of one: the lock command switches to
    `release` when it is there and good (and, with `head`, only while the branch head is that
    build's commit): live one round trip after the commit. `why`: the switch's reason."""

    release: str
    why: SwitchReason
    head: shell.HeadCheck | None = None


class _NotSwitched(Exception):
    """An unpin's lock command found the branch head elsewhere: the site is probed instead."""


@dataclass
class _Run:
    """What is known about one site while it converges, so an error at any point can still be
    recorded with the facts and rollout of the moment and the steps already done."""

    site: SiteDeclaration
    decl_commit: str | None
    facts: dict[str, SiteFacts] = field(default_factory=dict)
    rollout: Rollout | None = None
    applied: list[Applied] = field(default_factory=list)
    board: Board = field(default_factory=dict)
    snapshot: Snapshot | None = None
    checked: Mapping[str, HealthResult] = field(default_factory=dict)  # the live release's health, this poll

    @property
    def where(self) -> str:
        return label(self.site)

    @property
    def many(self) -> bool:
        return len(self.site.targets) > 1

    def on(self, server: str, text: str) -> str:
        """A server's own words, prefixed with its name when the site has more than one."""
        return f"{server}: {text}" if self.many else text

    def outcome(self, sync: Sync, health: Health, message: str = "", **more: Any) -> SiteOutcome:
        return SiteOutcome(self.site.domain, self.where, sync, health, message, self.applied, **more)

    def health(self) -> Health:
        return health_of(next(iter(self.facts.values()))) if self.facts else Health.UNKNOWN


async def converge_site(bench: Workbench, site: SiteDeclaration, decl_commit: str | None, notice: str = "", *,
                        facts: Mapping[str, SiteFacts] | None = None, head: BranchHead | None = None,
                        dry_run: bool = False, still_desired: Callable[[SiteDeclaration], bool] | None = None,
                        checked: Mapping[str, HealthResult] | None = None, snapshot: Snapshot | None = None,
                        shortcut: Shortcut | None = None) -> SiteOutcome:
    """Converge one site. `facts`/`head`: what a server round probed (a fleet of one); without
    them every server of the site is probed here. `checked`: the round's health checks of the
    live release. `still_desired` is asked right before a switch. Never raises (but for
    cancellation); the outcome is recorded unless `dry_run`."""
    run = _Run(site, decl_commit, snapshot=snapshot)
    try:
        outcome = await _converge(bench, run, facts, head, dry_run, still_desired, checked, shortcut)
        if run.checked and not outcome.switched:
            _report_health(run, outcome, run.checked)
    except _Unreachable as exc:
        outcome = exc.outcome
    except Exception as exc:
        outcome = outcome_of(exc, site.domain, run.where, run.health(), run.applied)
    if not dry_run:
        # Nothing was planned: the round's snapshot still holds this site's rows.
        quiet = run.snapshot if run.rollout is not None and not run.rollout.changes else None
        _fill_board(run, outcome)
        record.record(bench.store, site, outcome, decl_commit, notice, rollout=run.rollout, facts=run.facts,
                      board=run.board, snapshot=quiet)
    return outcome


async def _converge(bench: Workbench, run: _Run, facts: Mapping[str, SiteFacts] | None, head: BranchHead | None,
                    dry_run: bool, still_desired: Callable[[SiteDeclaration], bool] | None,
                    checked: Mapping[str, HealthResult] | None, shortcut: Shortcut | None) -> SiteOutcome:
    site, store = run.site, bench.store
    if facts is None and shortcut is not None and not dry_run and not run.many:
        try:
            async with bench.limit.slot(group_key(site)):
                return await _locked(bench, run, None, still_desired, f"switch {shortcut.release}", shortcut)
        except _NotSwitched:
            run.applied.clear()
    if facts is None:
        facts, head = await _probe_all(bench, run)
        if not dry_run:
            for server in facts:  # `status` says how old each server's facts are, as after a round
                with contextlib.suppress(Exception):
                    store.observed(server, bench.clock())
    run.facts = dict(facts)
    snap = run.snapshot
    rows = snap.deployments.get(site.domain) if snap is not None else None
    if not dry_run:
        moved = False
        for server, seen in run.facts.items():  # servers are the truth: a lost or older database is rebuilt
            moved = adopt(store, site.domain, seen, server=server, rows=rows) or moved
        if moved:
            snap = run.snapshot = None  # the rows moved: read them afresh
            rows = None
    request = snap.requests.get(site.domain) if snap is not None else store.pending_request(site.domain)
    owed = _reload_owed(bench, site.domain, snap)
    # Half-built releases can only be cleaned while nobody holds the lock (builders do).
    rollout = run.rollout = plan_rollout(
        site, run.facts, head, {s: record.failure_memory(store, site.domain, f, s, rows) for s, f in run.facts.items()},
        bench.clock(), clean_interrupted=all(f.lock is None for f in run.facts.values()),
        fresh_after=_fresh_after(request), reload_owed=owed)
    if dry_run:
        return _planned(bench, run, rollout)
    # A run of ours that died mid-way leaves its lock and unfinished rows: settle them under the
    # lock even when there is nothing else to do.
    leftovers = any(
        (f.lock is not None and lock.left_by_dead_run(lock.Owner.from_text(f.lock), bench.identity))
        or (_unfinished(rows, s) if rows is not None else store.unfinished(site.domain, s))
        for s, f in run.facts.items())
    run.checked = checked or {}
    if not rollout.changes and not leftovers:
        if request is not None and rollout.sync == Sync.SYNCED:
            store.clear_request(site.domain, request["at"])  # nothing left to build: moot
        if checked is None and rollout.sync == Sync.SYNCED and site.health is not None \
                and rollout.desired_release is not None:
            # Probed here (not by a server round): the live release's health checks are run here too.
            run.checked = await _check(bench, run, list(run.facts), rollout.desired_release)
        return run.outcome(rollout.sync, rollout.health, rollout.message)
    purpose = "; ".join(a.describe() for s in rollout.servers for a in rollout.actions(s))[:200] or "reconcile"
    # Only remote work takes a slot of the global limit: a site with nothing to do never
    # waits behind its server's deploys (a mass change would hold its status for minutes).
    async with bench.limit.slot(group_key(site)):
        return await _locked(bench, run, head, still_desired, purpose)


async def _probe_all(bench: Workbench, run: _Run) -> tuple[dict[str, SiteFacts], BranchHead | None]:
    """Every server of the site, at once. One that cannot be reached makes the whole site Unknown:
    nothing switches anywhere until every server answers (take a dead server out of `servers`)."""
    site = run.site
    probed = await asyncio.gather(*(bench.probe(server, [site]) for server in site.targets), return_exceptions=True)
    down = [(server, result) for server, result in zip(site.targets, probed, strict=True)
            if isinstance(result, BaseException)]
    if down and not run.many:
        raise down[0][1]
    if down:
        names = ", ".join(server for server, _ in down)
        known = {r["server"]: r["active_release"] for r in bench.store.site_servers(site.domain)}
        for server in site.targets:
            why = next((f"unreachable: {exc}" for s, exc in down if s == server), f"waiting for {names}")
            run.board[server] = (known.get(server), why)
        cause = down[0][1]
        outcome = outcome_of(cause, site.domain, run.where)
        raise _Unreachable(dataclasses.replace(outcome, message=(
            f"{names} unreachable ({outcome.message}); nothing switches on any server until every server "
            "answers (take a dead server out of `servers`)")))
    servers = [r for r in probed if not isinstance(r, BaseException)]
    head = servers[0].heads.get(site.head_key) if site.head_key is not None else None
    return {server: result.sites[site.domain] for server, result in zip(site.targets, servers, strict=True)}, head


class _Unreachable(Exception):
    """A server of a many-server site did not answer: the site's outcome, ready."""

    def __init__(self, outcome: SiteOutcome) -> None:
        super().__init__(outcome.message)
        self.outcome = outcome


def _planned(bench: Workbench, run: _Run, rollout: Rollout) -> SiteOutcome:
    """A dry run: what would be done, and a change someone else is making said so."""
    for seen in run.facts.values():
        owner = lock.Owner.from_text(seen.lock or "") if seen.lock else None
        if owner is not None and rollout.changes and not lock.left_by_dead_run(owner, bench.identity):
            # Someone is changing the site right now: what they do is not ours to plan twice.
            return run.outcome(Sync.PROGRESSING, rollout.health,
                               f"locked by {owner.describe()}: a change is in progress")
    if not run.many:
        return run.outcome(rollout.sync, rollout.health, rollout.message,
                           planned=list(rollout.actions(rollout.servers[0])))
    planned: list[Any] = [a for s in rollout.servers for a in rollout.prepare.get(s, ())
                          if isinstance(a, Clean | Relink)]
    if rollout.build is not None:
        planned.append(Deploy(rollout.build.release, rollout.build.commit, rollout.build.reason))
    if rollout.switch is not None:
        planned.append(Activate(rollout.switch.release, rollout.switch.reason, rollout.switch.servers))
    message = rollout.message or (f"script_once of {rollout.once.release} is owed on {rollout.once.server}"
                                  if rollout.once is not None else "")
    return run.outcome(rollout.sync, rollout.health, message, planned=planned)


async def _locked(bench: Workbench, run: _Run, head: BranchHead | None,
                  still_desired: Callable[[SiteDeclaration], bool] | None, purpose: str,
                  shortcut: Shortcut | None = None) -> SiteOutcome:
    """Take every server's lock, in one order (two reconcilers after the same site never each
    hold one and wait for the other), plan again from the facts read under them, carry out."""
    site, store = run.site, bench.store
    desired = None if still_desired is None else (lambda: still_desired(site))
    contexts = {s: bench.context(site, run.decl_commit, s, desired) for s in site.targets}
    request = store.pending_request(site.domain)
    for ctx in contexts.values():
        if request is not None:  # history says who asked for this build, and why
            ctx.trigger, ctx.requested_by = RequestKind(request["kind"]), request["by"]
    building = run.rollout is None or run.rollout.build is not None
    known = store.site(site.domain)
    before = known["active_release"] if known is not None else None  # what was live, for a lock command's switch
    outcome: SiteOutcome | None = None
    try:
        async with contextlib.AsyncExitStack() as stack:
            fresh: dict[str, SiteFacts] = {}
            for server in sorted(site.targets):
                fresh[server] = await stack.enter_async_context(bench.site_lock(
                    contexts[server], purpose, stage_script=building and shortcut is None,
                    activate=shortcut.release if shortcut is not None else None,
                    head=shortcut.head if shortcut is not None else None))
            run.facts = {s: fresh[s] for s in site.targets}
            by_lock = _switched_by_lock(contexts, shortcut)
            if shortcut is not None and shortcut.head is not None:
                if by_lock is None:
                    raise _NotSwitched()
                head = BranchHead(shortcut.head.commit)  # verified by the lock command, under the lock
            for server, seen in run.facts.items():
                adopt(store, site.domain, seen, locked=True, server=server)
            rollout = run.rollout = plan_rollout(
                site, run.facts, head,
                {s: record.failure_memory(store, site.domain, f, s) for s, f in run.facts.items()}, bench.clock(),
                clean_interrupted=True, fresh_after=_fresh_after(request), reload_owed=store.reload_owed(site.domain),
                takeover={s: c.lease.takeover if c.lease is not None else None for s, c in contexts.items()})
            outcome = await _carry_out(bench, run, rollout, contexts, by_lock, before)
            if request is not None and (rollout.build is not None or rollout.sync == Sync.SYNCED):
                # Answered: the requested build ran (whatever its result), or nothing was left to do.
                store.clear_request(site.domain, request["at"])
    except LockNotReleased as exc:
        if outcome is None:
            raise
        # The work is done and live; the lock left behind blocks the next change: say so.
        outcome.health = Health.DEGRADED
        outcome.message = "; ".join(m for m in (outcome.message, str(exc)) if m)
    assert outcome is not None
    return outcome


def _switched_by_lock(contexts: Mapping[str, apply.SiteContext], shortcut: Shortcut | None) -> Shortcut | None:
    """The shortcut, when the lock command did switch (else None). A switch it tried and failed
    is that switch's failure."""
    if shortcut is None:
        return None
    (ctx,) = contexts.values()
    status = ctx.lease.switched if ctx.lease is not None else None
    if status is None:
        return None
    if status == shell.EXIT_NOT_A_SYMLINK:
        raise LayoutConflict(f"{ctx.paths.site_link} is not a symlink; refusing to replace it")
    if status != 0:
        raise StepFailed(Step.SWITCH, status, "", f"the switch to {shortcut.release} failed (exit {status})")
    return shortcut


async def _carry_out(bench: Workbench, run: _Run, rollout: Rollout, contexts: Mapping[str, apply.SiteContext],
                     by_lock: Shortcut | None, before: str | None) -> SiteOutcome:
    site, store = run.site, bench.store
    if by_lock is not None:
        # Switched by the lock command: what follows a switch follows it, as for any switch.
        (server,) = contexts
        failed = await _switch(bench, run, contexts, by_lock.release, by_lock.why, {server: before},
                               carried={server: None}, started=time.monotonic(), built=False)
        if failed is not None:
            return failed
    health, message = rollout.health, rollout.message
    warnings = await _prepare(bench, run, rollout, contexts)
    if warnings is not None:
        health, message = record.reloaded(store, site.domain, rollout.desired_release or "", warnings)
    if rollout.halted:
        return run.outcome(rollout.sync, health, rollout.message)
    name = rollout.desired_release
    assert name is not None
    fused = rollout.build is not None and not run.many and rollout.once is None
    built: dict[str, str] = {}
    started = time.monotonic()
    if rollout.build is not None:
        result = await _build(bench, run, rollout, contexts, fused)
        if isinstance(result, SiteOutcome):
            return result
        built = result
    if rollout.once is not None:
        failed = await _run_once(bench, run, rollout, contexts[rollout.once.server], built.get(rollout.once.server))
        if failed is not None:
            return failed
    if rollout.switch is not None:
        switch = rollout.switch
        # A fused build's finish switched (and reloaded: its warning is the build step's note).
        carried = {server: run.applied[-1].note for server in switch.servers} if fused else {}
        done = await _switch(bench, run, contexts, switch.release, switch.reason, switch.previous, carried=carried,
                             started=started, built=rollout.build is not None)
        if done is not None:
            return done
        health, message = _after_message(run, rollout)
    elif by_lock is not None:
        health, message = _after_message(run, rollout)
    return await _prune(bench, run, rollout, contexts, run.outcome(Sync.SYNCED, health, message))


def _after_message(run: _Run, rollout: Rollout) -> tuple[Health, str]:
    """The site's health and message once a switch and what follows it are done: Healthy, unless
    the reload failed or a pin fails its health check (`after_switch` noted why)."""
    for applied in reversed(run.applied):
        if applied.note and isinstance(applied.action, Activate | Deploy):
            return Health.DEGRADED, applied.note
    return Health.HEALTHY, ""


async def _prepare(bench: Workbench, run: _Run, rollout: Rollout, contexts: Mapping[str, apply.SiteContext]
                   ) -> list[str] | None:
    """Each server's preparation. Returns the owed reload's warnings when one was retried."""
    site, store = run.site, bench.store
    reloads: list[str] | None = None
    for server, work in rollout.prepare.items():
        ctx = contexts[server]
        for action in work:
            ctx.step(action.describe())
            if isinstance(action, Provision):
                if rollout.build is None or server not in rollout.build.servers:
                    await apply.provision(ctx)  # a build's claim makes the layout in its own command
            elif isinstance(action, Clean):
                await apply.prune(ctx, action.releases)
                for name in action.releases:
                    store.mark_cleaned(site.domain, name, server)
            elif isinstance(action, Relink):
                log.warning("%s: drift%s: shared %s of the live release %s %s gone or replaced; relinking",
                            site.domain, f" on {server}" if run.many else "", ", ".join(action.entries),
                            action.release, "is" if len(action.entries) == 1 else "are")
                await apply.relink(ctx, action.release, action.entries)
            elif isinstance(action, Reload):
                reloads = reloads if reloads is not None else []
                if warning := await apply.reload(ctx, action.release):
                    reloads.append(run.on(server, warning))
            run.applied.append(Applied(action))
    return reloads


async def _build(bench: Workbench, run: _Run, rollout: Rollout, contexts: Mapping[str, apply.SiteContext],
                 fused: bool) -> dict[str, str] | SiteOutcome:
    """The build on every server that lacks it, at once, under one name. `fused` (a fleet of one
    with no run-once step): the build's finishing command also switches, the switch step then
    only follows it. Returns each server's built manifest (JSON), or the outcome that ends the
    rollout (a failed or superseded build)."""
    build = rollout.build
    assert build is not None
    site = run.site

    async def one(server: str) -> apply.Outcome:
        ctx = contexts[server]
        seen = run.facts[server]
        if build.release in seen.releases:  # a failed or half-built one of that name: its place is needed
            await apply.prune(ctx, (build.release,))
            bench.store.mark_cleaned(site.domain, build.release, server)
        # (An earlier attempt's row goes to history as `<name>#<n>`: Store.start_deployment.)
        last = fused and not rollout.prune.get(server)  # nothing else under the lock: the finish releases it
        # The run-once step is the first server's: only its manifest (and row) owes it.
        owes = site.script_once is not None and server == site.targets[0]
        return await apply.deploy(ctx, build.release, build.commit, build.reason, seen.active_release,
                                  switch_to_it=fused, release_lock=last, once=ONCE_PENDING if owes else "")

    results = await asyncio.gather(*(one(s) for s in build.servers), return_exceptions=True)
    outcomes: list[apply.Outcome] = []
    for result in results:
        # A server that went away mid-build is a temporary problem for the whole rollout (its row
        # says interrupted, nothing is remembered as failed): the outcome's retry policy decides.
        if isinstance(result, BaseException):
            raise result
        outcomes.append(result)
    failures = [(server, r.message) for server, r in zip(build.servers, outcomes, strict=True) if not r.ok]
    deploy = Deploy(build.release, build.commit, build.reason)
    if failures:
        for server, why in failures:
            run.board[server] = (run.facts[server].active_release, f"build of {build.release} failed: {why}")
        run.applied += [Applied(deploy, failed=True, note=why) for _, why in failures]
        if not run.many:
            return run.outcome(Sync.FAILED, run.health(), failures[0][1])
        return run.outcome(Sync.FAILED, rollout.health, f"build of {build.release} failed on "
                           + "; ".join(f"{s}: {why}" for s, why in failures) + "; no server switched")
    if any(r.superseded for r in outcomes):
        run.applied.append(Applied(deploy, superseded=True, note=outcomes[0].message))
        return run.outcome(Sync.OUT_OF_SYNC, run.health(), outcomes[0].message)
    if fused:
        run.applied.append(Applied(deploy, note=outcomes[0].warning))
    return {server: r.manifest for server, r in zip(build.servers, outcomes, strict=True)}


async def _run_once(bench: Workbench, run: _Run, rollout: Rollout, ctx: apply.SiteContext,
                    built: str | None) -> SiteOutcome | None:
    """`script_once` on the first server, in the release, before any switch, under its lock; then
    the manifest records it done, or the release failed (remembered like a failed build: no hot
    loop, until a change or `retry`). None when it succeeded."""
    once = rollout.once
    assert once is not None and run.site.script_once is not None
    manifest = Manifest.from_json(built) if built else None
    if manifest is None:
        found = run.facts[once.server].releases.get(once.release)
        manifest = found.manifest if found is not None else None
    if manifest is None or manifest.status != DeployStatus.SUCCESS:
        return run.outcome(Sync.FAILED, rollout.health, run.on(once.server, f"release {once.release} is not a "
                           "successful build there any more") + "; no server switched")
    ctx.step(f"script_once {once.release}")
    try:
        await apply.run_step(ctx, shell.run_once(ctx.paths, once.release, run.site.script_once),
                             bench.settings.deploy_timeout)
    except StepFailed as exc:
        why = f"exit {exc.exit_status}"
        message = f"script_once failed: {why}; this release never goes live (retry builds it again)"
        failed = dataclasses.replace(manifest, status=DeployStatus.FAILED, completed_at=utcnow(), message=message)
        await apply.mark_failed(ctx, once.release, failed.to_json(), message)
        await apply.keep_log(ctx, once.release)  # its output, for `logs` and history
        run.board[once.server] = (run.facts[once.server].active_release,
                                  f"script_once of {once.release} failed: {why}")
        return run.outcome(Sync.FAILED, rollout.health,
                           f"script_once failed on {once.server}: {why}; no server switched")
    await apply.record_once_done(ctx, once.release, dataclasses.replace(manifest, once=ONCE_DONE).to_json())
    await apply.keep_log(ctx, once.release)
    return None


async def _switch(bench: Workbench, run: _Run, contexts: Mapping[str, apply.SiteContext], release: str,
                  why: SwitchReason, previous: Mapping[str, str | None], *, carried: Mapping[str, str | None],
                  started: float, built: bool) -> SiteOutcome | None:
    """The one place a release goes live: on every server in `previous` (each one's release
    before), all or nothing (a switch that fails on one server after others switched switches
    those back), then `after_switch`. `carried`: the servers where a neighbouring command already
    switched (a fused build's finish, which reloaded too: its warning; a lock command, which did
    not reload: None), so no second switch is sent. None when all went well."""
    moving = [server for server in previous if server not in carried]
    reloaded = {server: warning for server, warning in carried.items() if warning is not None}
    if moving:
        ctx = contexts[moving[0]]
        if ctx.still_desired is not None and not ctx.still_desired():
            return run.outcome(Sync.OUT_OF_SYNC, run.health(), "a newer declaration landed; not switched")
        for server in moving:
            contexts[server].step(f"switch to {release}")
        results = await asyncio.gather(*(apply.switch(contexts[s], release) for s in moving), return_exceptions=True)
        broken = [(s, r) for s, r in zip(moving, results, strict=True) if isinstance(r, BaseException)]
        if broken:
            if not run.many:
                raise broken[0][1]
            undone = []
            for server, result in zip(moving, results, strict=True):
                if not isinstance(result, BaseException) and previous.get(server) is not None:
                    await apply.switch(contexts[server], previous[server] or "")
                    undone.append(server)
            reasons = "; ".join(f"{s}: {r}" for s, r in broken)
            for server, result in broken:
                run.board[server] = (previous.get(server), f"switch to {release} failed: {result}")
            back = f"; switched back on {', '.join(undone)}" if undone else ""
            return run.outcome(Sync.FAILED, Health.DEGRADED, f"switch to {release} failed on {reasons}{back}")
    return await after_switch(bench, run, contexts, release, why, dict(previous), reloaded, started, built=built)


async def after_switch(bench: Workbench, run: _Run, contexts: Mapping[str, apply.SiteContext], release: str,
                       why: SwitchReason, previous: dict[str, str | None], reloaded: dict[str, str],
                       live_since: float, *, built: bool) -> SiteOutcome | None:
    """What follows every switch: the reload (where the switching command did not reload), the
    health check, the switch back everywhere when it fails (a pin is the operator's: reported,
    never switched away from), and history. `previous`: each switched server's release before;
    `reloaded`: servers already reloaded, with their warning. None when all went well; the
    warnings are in the applied step's note."""
    site, store = run.site, bench.store
    servers = list(previous)
    missing = [s for s in servers if s not in reloaded]
    for server, warning in zip(missing, await asyncio.gather(*(apply.reload(contexts[s], release) for s in missing)),
                               strict=True):
        reloaded[server] = warning
    health, message = record.reloaded(store, site.domain, release,
                                      [run.on(s, w) for s, w in reloaded.items() if w])
    checked = await _check(bench, run, servers, release, contexts) if site.health is not None else {}
    failing = [(s, r.detail) for s, r in checked.items() if not r.ok]
    first = servers[0]
    if failing and why != SwitchReason.ROLLBACK:
        return await _switch_back(bench, run, contexts, release, previous, failing, live_since)
    if failing:
        # As for any activation of a pin: reported, never switched away from.
        health = Health.DEGRADED
        message = "; ".join(m for m in (message, *(run.on(s, f"pinned release {release} fails its health check: "
                                                            f"{d}; the pin holds") for s, d in failing)) if m)
    if not built:
        # One history entry for the rollout (a build's own rows say it was built and went live):
        # why it switched without a build, and who asked.
        cause, by = _activation_cause(bench, run, why)
        now = utcnow()
        row = store.by_release(site.domain, release, first)
        store.update_site(site.domain, active_deployment_id=row["id"] if row else None, active_release=release,
                          active_commit=row["commit_sha"] if row else None, last_deployed_at=now)
        store.record_activation(site.domain, release, previous[first], now, cause, by)
        log.info("%s: activated release %s (was %s; %s%s)", site.domain, release, previous[first] or "none", cause,
                 f", asked by {by}" if by else "")
    if built:
        # The build's rows say it was built; the site's row says it is live now, and since when.
        row = store.by_release(site.domain, release, first)
        store.update_site(site.domain, active_deployment_id=row["id"] if row else None, active_release=release,
                          active_commit=row["commit_sha"] if row else None, last_deployed_at=utcnow(),
                          last_deployment_sha=row["commit_sha"] if row else None)
    note = message if health == Health.DEGRADED else ""
    if built and run.applied and isinstance(run.applied[-1].action, Deploy):
        run.applied[-1] = dataclasses.replace(run.applied[-1], note=note)
    elif built:
        commit = run.rollout.build.commit if run.rollout is not None and run.rollout.build is not None else ""
        run.applied.append(Applied(Deploy(release, commit), note=note))
    else:
        run.applied.append(Applied(Activate(release, why), note=note))
    return None


async def _switch_back(bench: Workbench, run: _Run, contexts: Mapping[str, apply.SiteContext], release: str,
                       previous: dict[str, str | None], failing: list[tuple[str, str]], live_since: float
                       ) -> SiteOutcome:
    """A health check failed after the switch on some server: every server that switched goes back
    to its previous release, and `release` is a failed build everywhere (remembered: no hot loop)."""
    site, store = run.site, bench.store
    reasons = "; ".join(run.on(s, d) for s, d in failing)
    message = f"health check failed after switch on {reasons}" if run.many else \
        f"health check failed after switch: {reasons}"
    back = [s for s, p in previous.items() if p is not None]
    for server in back:
        await apply.switch(contexts[server], previous[server] or "")
        await apply.reload(contexts[server], previous[server] or "")
    if back:
        was = previous[back[0]] or ""
        row = store.by_release(site.domain, was, back[0])
        now = utcnow()
        store.update_site(site.domain, active_deployment_id=row["id"] if row else None, active_release=was,
                          active_commit=row["commit_sha"] if row else None, last_deployed_at=now)
        store.record_activation(site.domain, was, release, now, SwitchReason.AUTO_ROLLBACK, "")
        log.warning("%s: %s failed its health check after the switch (%s); switched back to %s", site.domain,
                    release, reasons, was)
        first = previous[back[0]]
        message += (f"; it was live {time.monotonic() - live_since:.1f} s, "
                    + (f"{first} serves again" if not run.many else "switched back on every server"))
    else:
        message += "; there is no previous release to return to, so it stays live"
    for server, seen in run.facts.items():
        if server not in previous:
            continue
        row = store.by_release(site.domain, release, server)
        found = seen.releases.get(release)
        manifest = found.manifest if found is not None and found.manifest is not None else (
            Manifest(row["commit_sha"], row["branch"] or "", row["repository"] or site.repository, row["build_key"],
                     DeployStatus.FAILED, row["started_at"] or "", "", row["declarations_commit"] or "")
            if row is not None and row["commit_sha"] and row["build_key"] else None)
        if manifest is not None:
            failed = dataclasses.replace(manifest, status=DeployStatus.FAILED, completed_at=utcnow(),
                                         message=message[:500])
            await apply.mark_failed(contexts[server], release, failed.to_json(), message)
        run.board[server] = (previous[server] or release, message)
    commit = run.rollout.build.commit if run.rollout is not None and run.rollout.build is not None else ""
    run.applied.append(Applied(Deploy(release, commit), failed=True, note=message))
    if back:
        run.applied.append(Applied(Activate(previous[back[0]] or "", SwitchReason.AUTO_ROLLBACK)))
    return run.outcome(Sync.FAILED, Health.HEALTHY if back else Health.DEGRADED, message)


def _activation_cause(bench: Workbench, run: _Run, why: SwitchReason) -> tuple[SwitchReason, str]:
    """Why a release is switched to without a build, and who asked, for history: a pin is a
    rollback (asked by the author of the declarations commit applied), the pin's removal an
    unpin, a live link that is not the one we set is drift corrected; else a roll-forward."""
    row: Mapping[str, Any] = bench.store.site(run.site.domain) or {}
    if why == SwitchReason.ROLLBACK:
        return SwitchReason.ROLLBACK, record.author(bench.settings.local_repo, run.decl_commit)
    if row.get("pinned"):
        return SwitchReason.UNPIN, record.author(bench.settings.local_repo, run.decl_commit)
    seen = next(iter(run.facts.values()), None)
    if row.get("active_release") and seen is not None and row.get("active_release") != seen.active_release:
        return SwitchReason.DRIFT, ""
    return (SwitchReason.ROLL_FORWARD if why == SwitchReason.DEPLOY else why), ""


async def _prune(bench: Workbench, run: _Run, rollout: Rollout, contexts: Mapping[str, apply.SiteContext],
                 outcome: SiteOutcome) -> SiteOutcome:
    """Prune each server alike, once the rollout succeeded; the last command releases the lock."""
    for server, names in rollout.prune.items():
        ctx = contexts[server]
        ctx.step(Prune(names).describe())
        try:
            await apply.prune(ctx, names, release_lock=True)
        except PermanentError as exc:
            # The new release is live; old ones that would not go only cost disk.
            run.applied.append(Applied(Prune(names), failed=True, note=str(exc)))
            outcome.health = Health.DEGRADED
            outcome.message = "; ".join(m for m in (outcome.message, run.on(server, str(exc))) if m)
            continue
        run.applied.append(Applied(Prune(names)))
    if bench.store.reload_owed(run.site.domain) is not None:
        # A failed reload is retried with backoff (the daemon doubles the wait), not forgotten.
        outcome.retry_after, outcome.backoff = RELOAD_RETRY, True
    return outcome


async def _check(bench: Workbench, run: _Run, servers: list[str], release: str,
                 contexts: Mapping[str, apply.SiteContext] | None = None) -> dict[str, HealthResult]:
    """The `[health]` check of `release` on `servers`, at once."""
    given = contexts or {s: bench.context(run.site, run.decl_commit, s) for s in servers}
    results = await asyncio.gather(*(apply.check_health(given[s], release) for s in servers), return_exceptions=True)
    found: dict[str, HealthResult] = {}
    for server, result in zip(servers, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result
            found[server] = HealthResult(False, f"the health check could not run: {result}")
        elif result is not None:
            found[server] = result
    return found


def _report_health(run: _Run, outcome: SiteOutcome, checked: Mapping[str, HealthResult]) -> None:
    """The live release's health check, run this poll, as the site's health (never a switch: a
    flapping backend must not cause a storm of rollbacks)."""
    failing = [(s, r.detail) for s, r in checked.items() if not r.ok]
    if not failing or outcome.health in (Health.MISSING, Health.UNKNOWN):
        return
    outcome.health = Health.DEGRADED
    for server, detail in failing:
        run.board[server] = (run.facts[server].active_release, f"health check failing: {detail}")
    note = "; ".join(run.on(s, f"health check failing: {d}") for s, d in failing)
    outcome.message = "; ".join(m for m in (outcome.message, f"{note} (nothing switches between deploys)") if m)


def _fill_board(run: _Run, outcome: SiteOutcome) -> None:
    """Each server's live release and why it is not in step, for `status` of a many-server site."""
    if not run.many or not run.facts:
        return
    live = record.live_after(outcome)
    for server, seen in run.facts.items():
        if server in run.board:
            continue
        now = live if live is not None and outcome.sync == Sync.SYNCED else seen.active_release
        run.board[server] = (now, "")


def _reload_owed(bench: Workbench, domain: str, snapshot: Snapshot | None) -> tuple[str, str] | None:
    if snapshot is None:
        return bench.store.reload_owed(domain)
    row: Mapping[str, Any] = snapshot.sites.get(domain) or {}
    release = row.get("reload_owed")
    return (release, row.get("reload_owed_reason") or "reload failed") if release else None


def _unfinished(rows: Sequence[Mapping[str, Any]], server: str) -> bool:
    return any(r["status"] in UNFINISHED and r.get("server") == server for r in rows)


def _fresh_after(request: RequestRow | None) -> datetime | None:
    """For a pending `redeploy`: the time of the newest release when it was asked (builds named
    up to it do not satisfy the head). None: no request, or there was no release at all."""
    if request is None or request["kind"] != RequestKind.REDEPLOY or not request.get("after"):
        return None
    return parse_release(request["after"])


def unpin_shortcut(bench: Workbench, site: SiteDeclaration) -> Shortcut | None:
    """An unpin that just landed: the release to go back to (the newest successful build with the
    site's build key still on the server, as the store knows it) and what the lock command must
    find true to switch to it (the branch head is that build's commit). None when there is none,
    or the site is no branch site, or has a health check (an activation checked after its switch
    takes the probed way)."""
    key = site.head_key
    if key is None or site.ref.kind != "branch" or site.health is not None:
        return None
    rows = [r for r in bench.store.deployments(site.domain)
            if r.get("server") in (None, site.server) and r["status"] == DeployStatus.SUCCESS
            and r.get("build_key") == site.build_key and r.get("deployment_path")
            and parse_release(r["release"]) is not None and r["commit_sha"]]
    if not rows:
        return None
    newest = max(rows, key=lambda r: parse_release(r["release"]) or datetime.min.replace(tzinfo=UTC))
    seconds = shell.head_bounds(bench.settings.command_timeout, bench.settings.git_timeout)[0]
    return Shortcut(newest["release"], SwitchReason.ROLL_FORWARD,
                    shell.HeadCheck(key[0], key[1], newest["commit_sha"] or "", site.build_key, seconds))
