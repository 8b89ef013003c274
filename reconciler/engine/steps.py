"""The steps of a rollout on a site's servers, under their locks: each server's preparation,
the build (on every server that lacks the release, at once, under one name), the run-once step
on the first server, and pruning once the rollout succeeded. The switch between them is
`engine/switching.py`'s; the order is `engine/executor.py`'s."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping

from reconciler.core.manifest import ONCE_DONE, ONCE_PENDING, Manifest
from reconciler.core.plan import Clean, Deploy, Provision, Prune, Relink, Reload, WriteEnv
from reconciler.core.rollout import Rollout
from reconciler.core.status import DeployStatus, Health, Sync
from reconciler.engine import apply, building
from reconciler.engine.outcome import RELOAD_RETRY, Applied, SiteOutcome
from reconciler.engine.site_run import SiteRun
from reconciler.engine.store import utcnow
from reconciler.engine.workbench import Workbench
from reconciler.errors import PermanentError, StepFailed
from reconciler.remote.protocol import site_steps

log = logging.getLogger(__name__)


async def prepare(bench: Workbench, run: SiteRun, rollout: Rollout, contexts: Mapping[str, apply.SiteContext]
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
            elif isinstance(action, WriteEnv):
                # The digest only: the content never reaches a log.
                log.log(logging.WARNING if action.replaces else logging.INFO,
                        "%s: %s%s: writing shared/.env (sha256 %s)", site.domain,
                        "shared/.env differs from the declared env (a new env commit, or env drift)"
                        if action.replaces else "no env yet",
                        f" on {server}" if run.many else "", action.digest[:12])
                await apply.write_env(ctx)
            elif isinstance(action, Reload):
                reloads = reloads if reloads is not None else []
                if warning := await apply.reload(ctx, action.release):
                    reloads.append(run.on(server, warning))
            run.applied.append(Applied(action))
    return reloads


async def build(bench: Workbench, run: SiteRun, rollout: Rollout, contexts: Mapping[str, apply.SiteContext],
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
        return await building.deploy(ctx, build.release, build.commit, build.reason, seen.active_release,
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


async def run_once(bench: Workbench, run: SiteRun, rollout: Rollout, ctx: apply.SiteContext,
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
        await apply.run_step(ctx, site_steps.run_once(ctx.paths, once.release, run.site.script_once),
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


async def prune(bench: Workbench, run: SiteRun, rollout: Rollout, contexts: Mapping[str, apply.SiteContext],
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
