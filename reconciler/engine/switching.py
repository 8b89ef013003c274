"""The switch and what follows it: the one place a release goes live on a site's servers (all or
nothing), and `after_switch` (reload, health check, switch back everywhere, history), used by
deploys, pins, unpins, redeploys, drift corrections and automatic rollbacks alike."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any

from reconciler.core.manifest import Manifest
from reconciler.core.plan import HEALTH_FAILED, Activate, Deploy
from reconciler.core.reasons import SwitchReason
from reconciler.core.status import DeployStatus, Health, Sync
from reconciler.engine import apply, record
from reconciler.engine.outcome import Applied, SiteOutcome
from reconciler.engine.site_run import SiteRun
from reconciler.engine.store import utcnow
from reconciler.engine.workbench import Workbench
from reconciler.remote.protocol.checking import HealthResult

log = logging.getLogger(__name__)


async def switch(bench: Workbench, run: SiteRun, contexts: Mapping[str, apply.SiteContext], release: str,
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


async def after_switch(bench: Workbench, run: SiteRun, contexts: Mapping[str, apply.SiteContext], release: str,
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
    checked = await check(bench, run, servers, release, contexts) if site.health is not None else {}
    failing = [(s, r.detail) for s, r in checked.items() if not r.ok]
    first = servers[0]
    if failing and why != SwitchReason.ROLLBACK:
        return await _switch_back(bench, run, contexts, release, previous, failing, live_since)
    if failing:
        # As for any activation of a pin: reported, never switched away from.
        health = Health.DEGRADED
        message = "; ".join(m for m in (message, *(run.on(s, f"pinned release {release} fails its health check: "
                                                            f"{d}; the pin holds") for s, d in failing)) if m)
    if why == SwitchReason.RETRY:
        await _passed_again(run, contexts, release, servers)
    if not built:
        # One history entry for the rollout (a build's own rows say it was built and went live):
        # why it switched without a build, and who asked.
        cause, by = _activation_cause(bench, run, why, contexts[first])
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
    elif why == SwitchReason.RETRY:
        # The deploy that failed its check completes now: `deployed`, as if it had passed then.
        row = store.by_release(site.domain, release, first)
        run.applied.append(Applied(Deploy(release, (row["commit_sha"] or "") if row else ""), note=note))
    else:
        run.applied.append(Applied(Activate(release, why), note=note))
    return None


async def _passed_again(run: SiteRun, contexts: Mapping[str, apply.SiteContext], release: str,
                        servers: list[str]) -> None:
    """A release that had failed only its health check passed it when checked again (`retry`):
    a successful build again, on each server and in the store."""
    for server in servers:
        found = run.facts[server].releases.get(release) if server in run.facts else None
        if found is not None and found.manifest is not None and found.manifest.status == DeployStatus.FAILED:
            done = dataclasses.replace(found.manifest, status=DeployStatus.SUCCESS, message="", completed_at=utcnow())
            await apply.mark_succeeded(contexts[server], release, done.to_json())


async def _switch_back(bench: Workbench, run: SiteRun, contexts: Mapping[str, apply.SiteContext], release: str,
                       previous: dict[str, str | None], failing: list[tuple[str, str]], live_since: float
                       ) -> SiteOutcome:
    """A health check failed after the switch on some server: every server that switched goes back
    to its previous release, and `release` is a failed build everywhere (remembered: no hot loop)."""
    site, store = run.site, bench.store
    reasons = "; ".join(run.on(s, d) for s, d in failing)
    message = f"{HEALTH_FAILED} on {reasons}" if run.many else f"{HEALTH_FAILED}: {reasons}"
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
    store.unforgive(site.domain, release)  # a `retry` that checked it again: remembered again
    commit = run.rollout.build.commit if run.rollout is not None and run.rollout.build is not None else ""
    run.applied.append(Applied(Deploy(release, commit), failed=True, note=message))
    if back:
        run.applied.append(Applied(Activate(previous[back[0]] or "", SwitchReason.AUTO_ROLLBACK)))
    return run.outcome(Sync.FAILED, Health.HEALTHY if back else Health.DEGRADED, message)


def _activation_cause(bench: Workbench, run: SiteRun, why: SwitchReason, ctx: apply.SiteContext
                      ) -> tuple[SwitchReason, str]:
    """Why a release is switched to without a build, and who asked, for history: a pin is a
    rollback (asked by the author of the declarations commit applied), the pin's removal an
    unpin, a release checked again the `retry` of whoever asked, a live link that is not the one
    we set is drift corrected; else a roll-forward."""
    if why == SwitchReason.RETRY:
        return SwitchReason.RETRY, ctx.requested_by or ""
    row: Mapping[str, Any] = bench.store.site(run.site.domain) or {}
    if why == SwitchReason.ROLLBACK:
        return SwitchReason.ROLLBACK, record.author(bench.settings.local_repo, run.decl_commit)
    if row.get("pinned"):
        return SwitchReason.UNPIN, record.author(bench.settings.local_repo, run.decl_commit)
    seen = next(iter(run.facts.values()), None)
    if row.get("active_release") and seen is not None and row.get("active_release") != seen.active_release:
        return SwitchReason.DRIFT, ""
    return (SwitchReason.ROLL_FORWARD if why == SwitchReason.DEPLOY else why), ""


async def check(bench: Workbench, run: SiteRun, servers: list[str], release: str,
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
