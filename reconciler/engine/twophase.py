"""One site on many servers (`servers = [...]`): build everywhere, switch everywhere, or switch
nowhere.

Capistrano and Deployer switch each host on its own, so a failure on one leaves the fleet
serving two versions. Here a deploy is one unit with one release name on every server:

1. **Build** (phase 1): every server that lacks a successful build of the desired commit builds
   it under the same name, in parallel, each under its own site lock. If any build fails, no
   server switches; the servers that built keep their release, and a later pass switches to it
   without rebuilding them once the failed server has it too.
2. **Run once**: `script_once` (migrations) runs on the first listed server, after its build and
   before any switch, exactly once per release: the build writes `once: pending` into the first
   server's manifest and only the step's success turns it into `done`. A release still pending
   there is never switched to (a later pass runs the step first: after a crash, after a failed
   build elsewhere was retried) and never pinned or offered for rollback. A failure marks the
   release failed on the first server: remembered like a failed build (sticky until a change or
   `retry`, which builds it there again and runs the step again). A site with `script_once` on one
   server is deployed here too, as a fleet of one.
3. **Switch** (phase 2): with every server's lock held, all servers switch at once (each an
   atomic rename), then each reloads. A switch that fails on one server after others switched
   switches those back.

An unreachable server makes the whole site Unknown: nothing switches anywhere until every server
answers (take a dead server out by removing it from `servers`). A pin is two-phase too: it
switches only when the pinned release is a successful build on every server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reconciler.core.declarations import SiteDeclaration
from reconciler.core.facts import ServerFacts, SiteFacts
from reconciler.core.layout import parse_release
from reconciler.core.manifest import ONCE_DONE, ONCE_PENDING, Manifest
from reconciler.core.plan import (
    Action,
    Activate,
    Clean,
    Deploy,
    Prune,
    Relink,
    Reload,
    interrupted_releases,
)
from reconciler.core.reasons import DeployReason, RequestKind, SwitchReason
from reconciler.core.rollout import Rollout, plan_rollout
from reconciler.core.status import DeployStatus, Health, Sync
from reconciler.engine import apply, source
from reconciler.engine.outcome import LOCK_RETRY, RELOAD_RETRY, Applied, SiteOutcome, outcome_of
from reconciler.engine.store import utcnow
from reconciler.errors import SiteLocked, StepFailed
from reconciler.remote import shell

log = logging.getLogger("reconciler")

if TYPE_CHECKING:  # converge calls this module; the type only is needed here
    from reconciler.engine.converge import Reconciler


@dataclass(frozen=True)
class Target:
    """One server of the site and what its probe said."""

    server: str
    facts: SiteFacts


def label(site: SiteDeclaration) -> str:
    """How a many-server site's servers are shown where one server name used to go."""
    return ", ".join(site.targets)


async def converge(rec: Reconciler, site: SiteDeclaration, decl_commit: str | None,
                   dry_run: bool = False) -> SiteOutcome:
    """Converge a site on every server in `site.targets`. Never raises (but for cancellation).
    Each server's live release and message are kept for `status` (`Store.set_site_servers`)."""
    board: Board = {}
    try:
        outcome = await _converge(rec, site, decl_commit, dry_run, board)
    except Exception as exc:
        outcome = outcome_of(exc, site.domain, label(site))
    if not dry_run and board:
        with contextlib.suppress(Exception):
            rec.store.set_site_servers(site.domain, board)
    return outcome


Board = dict[str, tuple[str | None, str]]  # server -> (its live release, why it is not in step)


async def _converge(rec: Reconciler, site: SiteDeclaration, decl_commit: str | None, dry_run: bool,
                    board: Board) -> SiteOutcome:
    from reconciler.engine.converge import failure_memory
    where = label(site)
    probed = await asyncio.gather(*(rec.probe(server, [site]) for server in site.targets), return_exceptions=True)
    down = [(server, result) for server, result in zip(site.targets, probed, strict=True)
            if isinstance(result, BaseException)]
    if down:
        cause = down[0][1]
        assert isinstance(cause, BaseException)
        outcome = outcome_of(cause, site.domain, where)
        names = ", ".join(server for server, _ in down)
        outcome.message = f"{names} unreachable ({outcome.message}); nothing switches on any server until " \
                          "every server answers (take a dead server out of `servers`)"
        known = {r["server"]: r["active_release"] for r in rec.store.site_servers(site.domain)}
        for server in site.targets:
            why = next((f"unreachable: {exc}" for s, exc in down if s == server), f"waiting for {names}")
            board[server] = (known.get(server), why)
        return outcome
    all_facts = [result for result in probed if isinstance(result, ServerFacts)]
    targets = [Target(server, facts.sites[site.domain]) for server, facts in zip(site.targets, all_facts,
                                                                                  strict=True)]
    board.update({t.server: (t.facts.active_release, "") for t in targets})
    if not dry_run:
        for target in targets:  # servers are the truth: a lost or older database is rebuilt from them
            rec.store.adopt(site.domain, target.facts, server=target.server)
    for target in targets:
        if target.facts.problem is not None:
            return SiteOutcome(site.domain, where, Sync.UNKNOWN, Health.UNKNOWN,
                               f"{target.server}: {target.facts.problem}")
    head = all_facts[0].heads.get(site.head_key) if site.head_key is not None else None
    # An operator's `retry` or `redeploy` (engine/actions.py): a redeploy asks for a build named
    # after every release there was when it was asked, so the builds up to then do not count.
    request = rec.store.pending_request(site.domain)
    fresh_after = (parse_release(request["after"]) if request is not None and request.get("after")
                   and request["kind"] == RequestKind.REDEPLOY else None)
    # What a dead run left half-built is planned here and decided again under each server's lock.
    rollout = plan_rollout(site, {t.server: t.facts for t in targets}, head,
                           {t.server: failure_memory(rec.store, site.domain, t.facts, t.server) for t in targets},
                           rec.clock(), clean_interrupted=True, fresh_after=fresh_after,
                           reload_owed=rec.store.reload_owed(site.domain))
    name = rollout.desired_release
    if rollout.halted or name is None:
        return SiteOutcome(site.domain, where, rollout.sync, rollout.health, rollout.message)
    if rollout.build is None and request is not None and not dry_run:
        rec.store.clear_request(site.domain, request["at"])  # nothing left to build: moot
    applied: list[Applied] = []
    build = rollout.build
    if build is not None:
        if dry_run:
            return SiteOutcome(site.domain, where, Sync.OUT_OF_SYNC, rollout.health, "",
                               planned=[Deploy(build.release, build.commit, build.reason)])
        need = [t for t in targets if t.server in build.servers]
        built_on = await _build_all(rec, site, need, name, build.commit, decl_commit, request)
        locked = [(server, why) for server, why, waits in built_on if waits]
        if request is not None and len(locked) < len(built_on):
            rec.store.clear_request(site.domain, request["at"])  # answered: the requested build ran
        failed = [(server, why) for server, why, waits in built_on if not waits]
        applied += [Applied(Deploy(name, build.commit), failed=bool(why), note=why) for _, why in failed]
        problems = [f"{server}: {why}" for server, why in failed if why]
        for server, why in failed:
            if why:
                board[server] = (board[server][0], f"build of {name} failed: {why}")
        if locked and not problems:
            # Another reconciler holds the site on a server (an overlap of shards, a CLI pass):
            # nothing failed, so nothing is remembered; the round comes back shortly.
            return SiteOutcome(site.domain, where, Sync.PROGRESSING, rollout.health,
                               "; ".join(f"{server}: {why}" for server, why in locked) + "; no server switched",
                               applied, retry_after=LOCK_RETRY)
        if problems:
            return SiteOutcome(site.domain, where, Sync.FAILED, rollout.health,
                               f"build of {name} failed on " + "; ".join(problems) + "; no server switched",
                               applied)
    if rollout.once is not None:
        if dry_run:
            return SiteOutcome(site.domain, where, Sync.OUT_OF_SYNC, rollout.health,
                               f"script_once of {name} is owed on {rollout.once.server}")
        first = next(t for t in targets if t.server == rollout.once.server)
        why = await _run_once(rec, site, first, name, decl_commit)
        if why:
            board[first.server] = (board[first.server][0], f"script_once of {name} failed: {why}")
            return SiteOutcome(site.domain, where, Sync.FAILED, rollout.health,
                               f"script_once failed on {first.server}: {why}; no server switched", applied)
    return await _switch_all(rec, site, targets, rollout, applied, dry_run, board, decl_commit)


async def _check_all(contexts: dict[str, apply.SiteContext], moving: list[Target], name: str
                     ) -> list[tuple[str, str]]:
    """The `[health]` check on every server that switched, at once: (server, why) of the failures."""
    results = await asyncio.gather(*(apply.check_health(contexts[t.server], name) for t in moving),
                                   return_exceptions=True)
    failures = []
    for target, result in zip(moving, results, strict=True):
        if isinstance(result, BaseException):
            failures.append((target.server, f"the health check could not run: {result}"))
        elif result is not None and not result.ok:
            failures.append((target.server, result.detail))
    return failures


async def _back_everywhere(rec: Reconciler, site: SiteDeclaration, contexts: dict[str, apply.SiteContext],
                           moving: list[Target], name: str, unhealthy: list[tuple[str, str]],
                           applied: list[Applied], board: Board) -> SiteOutcome:
    """A health check failed on some server after the switch: every server that switched goes
    back to its previous release, and `name` is a failed build everywhere (no hot loop)."""
    reasons = "; ".join(f"{server}: {why}" for server, why in unhealthy)
    message = f"health check failed after switch on {reasons}; switched back on every server"
    for target in moving:
        ctx = contexts[target.server]
        if target.facts.active_release is not None:
            await apply.switch_back(ctx, name, target.facts.active_release, reasons)
        row = rec.store.by_release(site.domain, name, target.server)
        if row is not None and row["commit_sha"] and row["build_key"]:
            failed = Manifest(row["commit_sha"], row["branch"] or "", row["repository"] or site.repository,
                              row["build_key"], DeployStatus.FAILED, row["started_at"] or "", utcnow(),
                              row["declarations_commit"] or "", message[:500])
            await apply.mark_failed(ctx, name, failed.to_json(), message)
        board[target.server] = (target.facts.active_release, message)
    applied.append(Applied(Activate(moving[0].facts.active_release or name, SwitchReason.AUTO_ROLLBACK)))
    return SiteOutcome(site.domain, label(site), Sync.FAILED, Health.HEALTHY, message, applied)


async def _build_all(rec: Reconciler, site: SiteDeclaration, need: list[Target], name: str, commit: str,
                     decl_commit: str | None, request: dict[str, Any] | None = None) -> list[tuple[str, str, bool]]:
    """Phase 1: build `name` on every server in `need` at once; (server, why it failed or "",
    whether it only waits for a lock another reconciler holds).

    The servers' locks are taken one at a time, in one order (by server), before any build
    starts: two reconcilers after the same site (an overlap of shards, a CLI pass beside the
    daemon) can never each hold one server's lock and wait for the other's. The first lock held
    elsewhere ends the attempt: the locks taken so far are released, nothing is built."""
    async with contextlib.AsyncExitStack() as stack:
        held: list[tuple[Target, apply.SiteContext, SiteFacts]] = []
        for target in sorted(need, key=lambda t: t.server):
            ctx = rec._context(site, decl_commit, target=target.server)
            if request is not None:  # history says who asked for this build, and why
                ctx.trigger, ctx.requested_by = RequestKind(request["kind"]), request["by"]
            try:
                fresh = await stack.enter_async_context(rec._site_lock(ctx, f"build {name}", stage_script=True))
            except SiteLocked as exc:
                return [(target.server, str(exc), True)]
            except Exception as exc:
                return [(target.server, outcome_of(exc, site.domain, target.server).message, False)]
            held.append((target, ctx, fresh))

        async def one(target: Target, ctx: apply.SiteContext, fresh: SiteFacts) -> tuple[str, str, bool]:
            try:
                rec.store.adopt(site.domain, fresh, locked=True, server=target.server)
                if name in fresh.releases:  # a failed or half-built one of that name: its place is needed
                    await apply.prune(ctx, (name,))
                    rec.store.mark_cleaned(site.domain, name, target.server)
                # (An earlier attempt's row goes to history as `<name>#<n>`: Store.start_deployment.)
                result = await apply.deploy(ctx, name, commit, DeployReason.DEPLOY, fresh.active_release,
                                            switch_to_it=False, once=ONCE_PENDING if site.script_once else "")
                return target.server, "" if result.ok else result.message, False
            except Exception as exc:
                return target.server, outcome_of(exc, site.domain, target.server).message, False

        return list(await asyncio.gather(*(one(*entry) for entry in held)))


async def _run_once(rec: Reconciler, site: SiteDeclaration, target: Target, name: str,
                    decl_commit: str | None) -> str:
    """`script_once` on one server, in the release, before any switch, under its lock; then the
    manifest records it done, or the release failed (remembered like a failed build: no hot loop).
    Why it failed, or ""."""
    assert site.script_once is not None
    ctx = rec._context(site, decl_commit, target=target.server)
    try:
        async with rec._site_lock(ctx, f"script_once {name}") as fresh:
            release = fresh.releases.get(name)
            manifest = release.manifest if release is not None else None
            if manifest is None or manifest.status != DeployStatus.SUCCESS:
                return f"release {name} is not a successful build there any more"
            if not manifest.once_owed:
                return ""  # another reconciler ran it meanwhile
            try:
                command = shell.run_once(ctx.paths, name, site.script_once)
                await apply.run_step(ctx, command, rec.settings.deploy_timeout)
            except StepFailed as exc:
                why = f"exit {exc.exit_status}"
                message = f"script_once failed: {why}; this release never goes live (retry builds it again)"
                failed = dataclasses.replace(manifest, status=DeployStatus.FAILED, completed_at=utcnow(),
                                             message=message)
                await apply.mark_failed(ctx, name, failed.to_json(), message)
                return why
            await apply.record_once_done(ctx, name, dataclasses.replace(manifest, once=ONCE_DONE).to_json())
    except Exception as exc:
        return outcome_of(exc, site.domain, target.server).message
    return ""


async def _clean(rec: Reconciler, site: SiteDeclaration, ctx: apply.SiteContext) -> list[Applied]:
    """Remove the releases a dead run left half-built on one server, decided under its lock from
    the facts read there (never while the owner we took the lock from may still be building)."""
    async with rec._site_lock(ctx, "remove interrupted releases") as fresh:
        names = interrupted_releases(fresh, ctx.lease.takeover if ctx.lease is not None else None)
        if not names:
            return []
        await apply.prune(ctx, names)
        for release in names:
            rec.store.mark_cleaned(site.domain, release, ctx.server)
        return [Applied(Clean(names))]


async def _relink(rec: Reconciler, site: SiteDeclaration, ctx: apply.SiteContext, name: str) -> list[Applied]:
    """Drift: shared links of the live release `name` on one server gone or replaced (a deleted
    `.env` link) are put back, under that server's lock, from the facts read under it."""
    async with rec._site_lock(ctx, f"relink shared entries of {name}") as fresh:
        if fresh.active_release != name or not fresh.unlinked:
            return []
        entries = tuple(fresh.unlinked)
        log.warning("%s: drift on %s: shared %s of the live release %s gone or replaced; relinking", site.domain,
                    ctx.server, ", ".join(entries), name)
        await apply.relink(ctx, name, entries)
        return [Applied(Relink(name, entries))]


def _activation_cause(rec: Reconciler, site: SiteDeclaration, why: SwitchReason,
                      decl_commit: str | None) -> tuple[SwitchReason, str]:
    """Why a release goes live without a build, and who asked (as for one server): a pin is a
    rollback by the author of the declarations commit applied, the end of a pin an unpin; else
    the release was there already (a roll-forward)."""
    def author() -> str:
        try:
            return source.author_of(rec.settings.local_repo, decl_commit) if decl_commit else ""
        except Exception:
            return ""  # history detail, never a reason to fail the switch
    if why == SwitchReason.ROLLBACK:
        return why, author()
    if (rec.store.site(site.domain) or {}).get("pinned"):
        return SwitchReason.UNPIN, author()
    return (SwitchReason.ROLL_FORWARD if why == SwitchReason.DEPLOY else why), ""


def _record_live(rec: Reconciler, site: SiteDeclaration, targets: list[Target], name: str) -> None:
    """The site's row: `name` is live everywhere (its commit and deployment from the first server's row)."""
    row = rec.store.by_release(site.domain, name, targets[0].server)
    rec.store.update_site(site.domain, server=label(site), base_path=site.base_path, active_release=name,
                          active_commit=row["commit_sha"] if row else None,
                          active_deployment_id=row["id"] if row else None)


async def _switch_all(rec: Reconciler, site: SiteDeclaration, targets: list[Target], rollout: Rollout,
                      applied: list[Applied], dry_run: bool, board: Board, decl_commit: str | None = None
                      ) -> SiteOutcome:
    """Phase 2: with every server's lock held, switch all that are not on the rollout's release,
    then reload; a failed switch puts the others back. Then prune each server alike."""
    where = label(site)
    name = rollout.desired_release
    assert name is not None
    why = rollout.switch.reason if rollout.switch is not None else SwitchReason.ROLL_FORWARD
    moving = [t for t in targets if rollout.switch is not None and t.server in rollout.switch.servers]
    prune = {t.server: rollout.prune.get(t.server, ()) for t in targets}
    if dry_run:
        planned: list[Action] = [a for t in targets for a in rollout.prepare.get(t.server, ())
                                 if isinstance(a, Clean | Relink)]
        planned += [Activate(name, why, tuple(t.server for t in moving))] if moving else []
        return SiteOutcome(site.domain, where, Sync.OUT_OF_SYNC if moving else Sync.SYNCED, Health.HEALTHY, "",
                           planned=planned)
    contexts = {t.server: rec._context(site, None, target=t.server) for t in targets}
    for target in targets:  # before the switch phase: each under its own server's lock
        work = rollout.prepare.get(target.server, ())
        if any(isinstance(a, Relink) for a in work):
            applied += await _relink(rec, site, contexts[target.server], name)
        if any(isinstance(a, Clean) for a in work):  # what a dead run left half-built, as for one server
            applied += await _clean(rec, site, contexts[target.server])
    retry_reload = any(isinstance(a, Reload) for work in rollout.prepare.values() for a in work)
    if not moving and not any(prune.values()) and not retry_reload:
        # In step everywhere: no lock needed. The health checks are reported, never acted on
        # between deploys (a flapping backend must not cause rollback storms).
        for target in targets:
            board[target.server] = (name, "")
        failing = await _check_all(contexts, targets, name) if site.health is not None else []
        for server, detail in failing:
            board[server] = (name, f"health check failing: {detail}")
        note = "; ".join(f"{server}: health check failing: {detail}" for server, detail in failing)
        _record_live(rec, site, targets, name)
        return SiteOutcome(site.domain, where, Sync.SYNCED, Health.DEGRADED if failing else Health.HEALTHY,
                           f"{note} (nothing switches between deploys)" if note else "", applied)
    async with contextlib.AsyncExitStack() as stack:
        for target in targets:  # in the declared order, always: two reconcilers never deadlock
            await stack.enter_async_context(rec._site_lock(contexts[target.server], f"switch {name}"))
        results = await asyncio.gather(*(apply.switch(contexts[t.server], name) for t in moving),
                                       return_exceptions=True)
        broken = [(t, r) for t, r in zip(moving, results, strict=True) if isinstance(r, BaseException)]
        if broken:
            undone = []
            for target, result in zip(moving, results, strict=True):
                if not isinstance(result, BaseException) and target.facts.active_release is not None:
                    await apply.switch(contexts[target.server], target.facts.active_release)
                    undone.append(target.server)
            reasons = "; ".join(f"{t.server}: {r}" for t, r in broken)
            back = f"; switched back on {', '.join(undone)}" if undone else ""
            for target, result in broken:
                board[target.server] = (target.facts.active_release, f"switch to {name} failed: {result}")
            return SiteOutcome(site.domain, where, Sync.FAILED, Health.DEGRADED,
                               f"switch to {name} failed on {reasons}{back}", applied)
        warnings = []
        # A failed reload is owed a retry until it succeeds (per site: the retry reloads every
        # server, which a graceful reload such as FPM's takes in its stride).
        for target in (targets if retry_reload else moving):
            if warning := await apply.reload(contexts[target.server], name):
                warnings.append(f"{target.server}: {warning}")
        if moving or retry_reload:
            rec.store.owe_reload(site.domain, name if warnings else None, "; ".join(warnings))
        pin_unhealthy: list[tuple[str, str]] = []
        if moving and why == SwitchReason.ROLLBACK and site.health is not None:
            # A pin is the operator's: checked like any activation, reported, never switched away from.
            pin_unhealthy = await _check_all(contexts, moving, name)
            warnings += [f"{server}: pinned release {name} fails its health check: {detail}; the pin holds"
                         for server, detail in pin_unhealthy]
        elif moving:
            unhealthy = await _check_all(contexts, moving, name)
            if unhealthy:
                return await _back_everywhere(rec, site, contexts, moving, name, unhealthy, applied, board)
        if moving and not any(isinstance(done.action, Deploy) for done in applied):
            # One history entry for the rollout (a build's own rows say it was built and went
            # live): why it switched without a build, and who asked.
            cause, by = _activation_cause(rec, site, why, decl_commit)
            rec.store.record_activation(site.domain, name, moving[0].facts.active_release, utcnow(), cause, by)
        if moving:
            applied.append(Applied(Activate(name, why)))
        for target in targets:
            board[target.server] = (name, next((w for w in warnings if w.startswith(f"{target.server}: ")), ""))
        for target in targets:
            if prune[target.server]:
                with contextlib.suppress(Exception):
                    await apply.prune(contexts[target.server], tuple(prune[target.server]))
                    applied.append(Applied(Prune(tuple(prune[target.server]))))
    _record_live(rec, site, targets, name)
    health = Health.DEGRADED if warnings else Health.HEALTHY
    outcome = SiteOutcome(site.domain, where, Sync.SYNCED, health, "; ".join(warnings), applied)
    if rec.store.reload_owed(site.domain) is not None:
        # Retried with backoff (the daemon doubles the wait), not forgotten.
        outcome.message += "; the reload is retried until it succeeds"
        outcome.retry_after, outcome.backoff = RELOAD_RETRY, True
    return outcome
