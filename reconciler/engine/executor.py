"""The one rollout executor: every site, on one server or many, converges here.

    facts of every server -> plan_rollout -> (nothing to do: record) -> a slot of the global
    limit -> every server's lock, taken in one order -> plan_rollout again from the facts read
    under the locks -> prepare -> build -> run once -> switch -> after_switch -> prune

A site on one server is a fleet of one, through the same steps. Two steps are carried by a
neighbouring command when that saves a round trip, never written twice: on a fleet of one with
no run-once step, the build's finishing command also switches (`building.deploy(switch_to_it=)`);
a pin or unpin that just landed is switched by the lock command itself (`held(activate=)`).
Either way `switching.switch` is where a switch is decided and done, and `after_switch` (reload,
health, switch-back, history) is what follows every switch: deploys, pins, unpins, redeploys,
drift corrections and automatic rollbacks alike. The steps themselves are `engine/steps.py`'s
(prepare, build, run once, prune) and `engine/switching.py`'s; this module is their order.

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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reconciler.core import windows
from reconciler.core.declarations import SiteDeclaration
from reconciler.core.facts import BranchHead, SiteFacts
from reconciler.core.layout import parse_release
from reconciler.core.plan import Activate, Clean, Deploy, Relink
from reconciler.core.reasons import RequestKind, SwitchReason
from reconciler.core.rollout import Rollout, plan_rollout
from reconciler.core.status import UNFINISHED, DeployStatus, Health, Step, Sync
from reconciler.engine import apply, record, steps, switching
from reconciler.engine.adoption import adopt
from reconciler.engine.outcome import SiteOutcome, outcome_of
from reconciler.engine.rows import RequestRow
from reconciler.engine.site_run import SiteRun
from reconciler.engine.store import Snapshot
from reconciler.engine.workbench import Workbench, group_key
from reconciler.errors import LayoutConflict, LockNotReleased, StepFailed, TransportError
from reconciler.remote import lock
from reconciler.remote.protocol import heads, locking, seam
from reconciler.remote.protocol.checking import HealthResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shortcut:
    """A pin or an unpin that just landed on a fleet of one: the lock command switches to
    `release` when it is there and good (and, with `head`, only while the branch head is that
    build's commit): live one round trip after the commit. `why`: the switch's reason."""

    release: str
    why: SwitchReason
    head: locking.HeadCheck | None = None


class _NotSwitched(Exception):
    """An unpin's lock command found the branch head elsewhere: the site is probed instead."""


async def converge_site(bench: Workbench, site: SiteDeclaration, decl_commit: str | None, notice: str = "", *,
                        facts: Mapping[str, SiteFacts] | None = None, head: BranchHead | None = None,
                        dry_run: bool = False, still_desired: Callable[[SiteDeclaration], bool] | None = None,
                        checked: Mapping[str, HealthResult] | None = None, snapshot: Snapshot | None = None,
                        shortcut: Shortcut | None = None) -> SiteOutcome:
    """Converge one site. `facts`/`head`: what a server round probed (a fleet of one); without
    them every server of the site is probed here. `checked`: the round's health checks of the
    live release. `still_desired` is asked right before a switch. Never raises (but for
    cancellation); the outcome is recorded unless `dry_run`."""
    run = SiteRun(site, decl_commit, snapshot=snapshot)
    try:
        outcome = await _converge(bench, run, facts, head, dry_run, still_desired, checked, shortcut)
        if run.rollout is not None and run.rollout.hold is not None and outcome.sync == Sync.OUT_OF_SYNC:
            outcome.held_until = run.rollout.hold.until  # the daemon looks again when the window opens
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


async def _converge(bench: Workbench, run: SiteRun, facts: Mapping[str, SiteFacts] | None, head: BranchHead | None,
                    dry_run: bool, still_desired: Callable[[SiteDeclaration], bool] | None,
                    checked: Mapping[str, HealthResult] | None, shortcut: Shortcut | None) -> SiteOutcome:
    site, store = run.site, bench.store
    if facts is None and shortcut is not None and not dry_run and not run.many and _window_open(bench, site):
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
        fresh_after=_fresh_after(request), reload_owed=owed, windows=bench.settings.window,
        override_window=bench.override_window is not None)
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
            run.checked = await switching.check(bench, run, list(run.facts), rollout.desired_release)
        return run.outcome(rollout.sync, rollout.health, rollout.message)
    purpose = "; ".join(a.describe() for s in rollout.servers for a in rollout.actions(s))[:200] or "reconcile"
    # Only remote work takes a slot of the global limit: a site with nothing to do never
    # waits behind its server's deploys (a mass change would hold its status for minutes).
    async with bench.limit.slot(group_key(site)):
        return await _locked(bench, run, head, still_desired, purpose)


async def _probe_all(bench: Workbench, run: SiteRun) -> tuple[dict[str, SiteFacts], BranchHead | None]:
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
        raise _Unreachable(dataclasses.replace(outcome, unreachable=tuple(s for s, e in down if isinstance(
            e, TransportError)), message=(
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


def _planned(bench: Workbench, run: SiteRun, rollout: Rollout) -> SiteOutcome:
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


async def _locked(bench: Workbench, run: SiteRun, head: BranchHead | None,
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
                takeover={s: c.lease.takeover if c.lease is not None else None for s, c in contexts.items()},
                windows=bench.settings.window, override_window=bench.override_window is not None)
            if rollout.overrode_window:  # history says who let this deploy through its window
                for ctx in contexts.values():
                    ctx.trigger, ctx.requested_by = RequestKind.OVERRIDE_WINDOW, bench.override_window
            outcome = await _carry_out(bench, run, rollout, contexts, by_lock, before)
            rechecked = rollout.switch is not None and rollout.switch.reason == SwitchReason.RETRY
            if request is not None and (rollout.build is not None or rechecked or rollout.sync == Sync.SYNCED):
                # Answered: the requested build ran (or the built release was checked again),
                # whatever its result, or nothing was left to do.
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
    if status == seam.EXIT_NOT_A_SYMLINK:
        raise LayoutConflict(f"{ctx.paths.site_link} is not a symlink; refusing to replace it")
    if status != 0:
        raise StepFailed(Step.SWITCH, status, "", f"the switch to {shortcut.release} failed (exit {status})")
    return shortcut


async def _carry_out(bench: Workbench, run: SiteRun, rollout: Rollout, contexts: Mapping[str, apply.SiteContext],
                     by_lock: Shortcut | None, before: str | None) -> SiteOutcome:
    site, store = run.site, bench.store
    if by_lock is not None:
        # Switched by the lock command: what follows a switch follows it, as for any switch.
        (server,) = contexts
        failed = await switching.switch(bench, run, contexts, by_lock.release, by_lock.why, {server: before},
                                        carried={server: None}, started=time.monotonic(), built=False)
        if failed is not None:
            return failed
    health, message = rollout.health, rollout.message
    warnings = await steps.prepare(bench, run, rollout, contexts)
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
        result = await steps.build(bench, run, rollout, contexts, fused)
        if isinstance(result, SiteOutcome):
            return result
        built = result
    if rollout.once is not None:
        once = rollout.once.server
        failed = await steps.run_once(bench, run, rollout, contexts[once], built.get(once))
        if failed is not None:
            return failed
    if rollout.switch is not None:
        switch = rollout.switch
        # A fused build's finish switched (and reloaded: its warning is the build step's note).
        carried = {server: run.applied[-1].note for server in switch.servers} if fused else {}
        done = await switching.switch(bench, run, contexts, switch.release, switch.reason, switch.previous,
                                      carried=carried, started=started, built=rollout.build is not None)
        if done is not None:
            return done
        health, message = _after_message(run)
    elif by_lock is not None:
        health, message = _after_message(run)
    if rollout.hold is not None:  # held by a deploy window: housekeeping only; the verdict stands
        return await steps.prune(bench, run, rollout, contexts, run.outcome(rollout.sync, health, rollout.message))
    return await steps.prune(bench, run, rollout, contexts, run.outcome(Sync.SYNCED, health, message))


def _after_message(run: SiteRun) -> tuple[Health, str]:
    """The site's health and message once a switch and what follows it are done: Healthy, unless
    the reload failed or a pin fails its health check (`after_switch` noted why)."""
    for applied in reversed(run.applied):
        if applied.note and isinstance(applied.action, Activate | Deploy):
            return Health.DEGRADED, applied.note
    return Health.HEALTHY, ""


def _report_health(run: SiteRun, outcome: SiteOutcome, checked: Mapping[str, HealthResult]) -> None:
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


def _fill_board(run: SiteRun, outcome: SiteOutcome) -> None:
    """Each server's live release and why it is not in step, for `status` of a many-server site."""
    if not run.many or not run.facts:
        return
    live = record.live_after(outcome)
    for server, seen in run.facts.items():
        if server in run.board:
            continue
        now = live if live is not None and outcome.sync == Sync.SYNCED else seen.active_release
        run.board[server] = (now, "")


def _window_open(bench: Workbench, site: SiteDeclaration) -> bool:
    """A pin's or unpin's switch by the lock command skips the planner: it is taken only while
    no deploy window holds the site (else the planner's way says so) or windows are overridden."""
    held = windows.hold(bench.settings.window, site.domain, bench.clock(), pinned=site.pin is not None)
    return held is None or bench.override_window is not None


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
    takes the probed way), or the pinned release is a build of that same commit."""
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
    known = bench.store.site(site.domain)
    live = known["active_release"] if known is not None else None
    if any(r["release"] == live and r["commit_sha"] == newest["commit_sha"] for r in rows):
        # The pinned release is itself a build of that commit: the planner keeps it live (no
        # switch), where this shortcut would switch to the newest build. The probed way decides.
        return None
    seconds = heads.head_bounds(bench.settings.command_timeout, bench.settings.git_timeout)[0]
    return Shortcut(newest["release"], SwitchReason.ROLL_FORWARD,
                    locking.HeadCheck(key[0], key[1], newest["commit_sha"] or "", site.build_key, seconds))
