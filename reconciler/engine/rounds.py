"""Passes and server rounds: declarations -> facts per server -> the rollout executor per site.

A server round probes one server once (one command) for all its one-server sites, runs their
live releases' health checks in one more, and hands each site to the executor with its facts;
sites converge concurrently under the global limit. A site on many servers is probed by the
executor itself, all its servers at once. The CLI's pass and the daemon share these rounds.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Set
from dataclasses import dataclass
from typing import Any

from reconciler.core.declarations import Declarations, SiteDeclaration
from reconciler.core.facts import ServerFacts
from reconciler.core.reasons import SwitchReason
from reconciler.core.status import Health, Sync
from reconciler.engine import executor
from reconciler.engine.desired import DesiredState
from reconciler.engine.executor import Shortcut
from reconciler.engine.outcome import SiteOutcome, outcome_of
from reconciler.engine.record import record
from reconciler.engine.store import Snapshot
from reconciler.engine.workbench import Workbench
from reconciler.remote import health as health_checks
from reconciler.remote.protocol.checking import HealthResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerRound:
    """The sites of one server after one round; `reached` is False when its probe failed."""

    server: str
    outcomes: list[SiteOutcome]
    reached: bool


def record_invalid(bench: Workbench, decls: Declarations, only: str | None = None,
                   dry_run: bool = False) -> list[SiteOutcome]:
    """Invalid declarations: reported, never touched."""
    outcomes = []
    for domain, invalid in decls.invalid.items():
        if only in (None, domain):
            outcomes.append(SiteOutcome(domain, invalid.server, Sync.INVALID, Health.UNKNOWN, invalid.message))
            if not dry_run:
                bench.store.update_site(domain, server=invalid.server, sync=Sync.INVALID, health=Health.UNKNOWN,
                                        message=invalid.message, declarations_commit=decls.commit)
    return outcomes


async def run_pass(bench: Workbench, desired: DesiredState, only: str | None = None,
                   dry_run: bool = False) -> list[SiteOutcome]:
    decls = desired.owned(desired.load())
    outcomes = record_invalid(bench, decls, only, dry_run)
    by_server: dict[str, list[SiteDeclaration]] = defaultdict(list)
    many: list[SiteDeclaration] = []
    for site in decls.sites.values():
        if only in (None, site.domain):
            (many.append(site) if len(site.targets) > 1 else by_server[site.server].append(site))
    rounds = await asyncio.gather(*(converge_server(bench, desired.notice, server, sites, decls.commit,
                                                    dry_run=dry_run) for server, sites in by_server.items()))
    for batch in rounds:
        outcomes.extend(batch.outcomes)
    # A site on many servers: the executor probes all of them.
    outcomes += await asyncio.gather(*(executor.converge_site(bench, site, decls.commit, desired.notice,
                                                              dry_run=dry_run) for site in many))
    return sorted(outcomes, key=lambda o: o.domain)


async def converge_server(bench: Workbench, notice: str, server: str, sites: list[SiteDeclaration],
                          decl_commit: str | None, *, dry_run: bool = False, eager: Set[str] = frozenset(),
                          still_desired: Callable[[SiteDeclaration], bool] | None = None,
                          on_outcome: Callable[[SiteOutcome], None] | None = None) -> ServerRound:
    """Probe `server` once for `sites` and converge each of them. Never raises: a probe that
    fails is every one of these sites' outcome (they share the server), a site's failure is
    its own. Sites in `eager` (a pin or unpin that just landed) skip the probe: their lock
    command probes too, and switches, one round trip less between the commit and the switch.
    `on_outcome` (must not raise) is told each converged site's outcome as soon as it is known,
    so the daemon frees a site without waiting for its server's slowest deploy; when the probe
    fails, its sites' outcomes are only in the returned round."""
    hurry = [s for s in sites if s.domain in eager and not dry_run]
    rest = [s for s in sites if s not in hurry]
    # Started now, not at the gather below: a pin's lock command must not wait for the probe.
    early = [asyncio.ensure_future(_told(executor.converge_site(
        bench, s, decl_commit, notice, still_desired=still_desired, shortcut=_shortcut(bench, s)), on_outcome))
        for s in hurry]
    work: list[Coroutine[Any, Any, SiteOutcome]] = []
    outcomes: list[SiteOutcome] = []
    try:
        reached = await _probe_round(bench, notice, server, rest, decl_commit, dry_run, still_desired, work, outcomes)
    except BaseException:
        for task in early:
            task.cancel()
        raise
    outcomes += await asyncio.gather(*early, *(_told(one, on_outcome) for one in work))
    return ServerRound(server, outcomes, reached or not rest)


def _shortcut(bench: Workbench, site: SiteDeclaration) -> Shortcut | None:
    if site.pin is not None:
        return Shortcut(site.pin, SwitchReason.ROLLBACK)
    return executor.unpin_shortcut(bench, site)


async def _probe_round(bench: Workbench, notice: str, server: str, rest: list[SiteDeclaration],
                       decl_commit: str | None, dry_run: bool,
                       still_desired: Callable[[SiteDeclaration], bool] | None,
                       work: list[Coroutine[Any, Any, SiteOutcome]], outcomes: list[SiteOutcome]) -> bool:
    """Probe `server` for `rest`: their work goes to `work`, a failed probe's outcomes to
    `outcomes`. Returns whether the server was reached."""
    if not rest:
        return False
    try:
        facts = await bench.probe(server, rest)
    except Exception as exc:
        for site in rest:
            outcome = outcome_of(exc, site.domain, server)
            outcomes.append(outcome)
            if not dry_run:
                record(bench.store, site, outcome, decl_commit, notice)
        return False
    checked: dict[str, HealthResult] = {}
    snapshot = None
    if not dry_run:
        _observed(bench, server)
        checked = await _check_live(bench, server, rest, facts)
        snapshot = _snapshot(bench, [s.domain for s in rest])
    for site in rest:
        head = facts.heads.get(key) if (key := site.head_key) is not None else None
        found = checked.get(site.domain)
        work.append(executor.converge_site(
            bench, site, decl_commit, notice, facts={server: facts.sites[site.domain]}, head=head, dry_run=dry_run,
            still_desired=still_desired, checked={server: found} if found is not None else {}, snapshot=snapshot))
    return True


async def _check_live(bench: Workbench, server: str, sites: list[SiteDeclaration], facts: ServerFacts
                      ) -> dict[str, HealthResult]:
    """Every poll: the `[health]` checks of the server's live releases, in one command. The
    result is reported (health, message), never acted on: between deploys nothing switches
    by itself, so a flapping backend cannot cause a storm of rollbacks."""
    probes: dict[str, health_checks.Probe] = {}
    for site in sites:
        found = facts.sites.get(site.domain)
        if site.health is not None and found is not None and found.problem is None and found.active_release:
            probes[site.domain] = health_checks.Probe(found.paths.release(found.active_release), site.domain,
                                                      site.health)
    if not probes:
        return {}
    started = asyncio.get_running_loop().time()
    try:
        results = await health_checks.run(bench.pool.get(server), list(probes.values()))
    except Exception as exc:
        results = [HealthResult(False, f"the health check could not run: {exc}")] * len(probes)
    if bench.on_health_check is not None:
        bench.on_health_check(asyncio.get_running_loop().time() - started)
    return dict(zip(probes, results, strict=True))


def _snapshot(bench: Workbench, domains: list[str]) -> Snapshot | None:
    """The round's rows at once (a no-op pass read a dozen rows per site). None: read
    per site as before, should the snapshot itself fail."""
    try:
        return bench.store.snapshot(domains)
    except Exception:
        log.exception("could not read the state of %d site(s) at once", len(domains))
        return None


def _observed(bench: Workbench, server: str) -> None:
    try:
        bench.store.observed(server, bench.clock())
    except Exception:
        log.exception("%s: could not record the probe time", server)


async def _told(work: Awaitable[SiteOutcome], on_outcome: Callable[[SiteOutcome], None] | None) -> SiteOutcome:
    outcome = await work
    if on_outcome is not None:
        on_outcome(outcome)
    return outcome
