"""`reconciler prune`: the same locked path as a pass. Candidates come from facts probed under the
site's lock (a dry run probes without it and changes nothing); a site whose lock is held, or
whose server fails, is reported and the others go on. A site on many servers: each, alike."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from reconciler.core.declarations import SiteDeclaration
from reconciler.core.facts import SiteFacts
from reconciler.core.plan import prune_candidates
from reconciler.engine import apply
from reconciler.engine.adoption import adopt
from reconciler.engine.desired import DesiredState
from reconciler.engine.outcome import outcome_of
from reconciler.engine.workbench import Workbench


@dataclass(frozen=True)
class PruneResult:
    domain: str
    releases: list[str]
    done: bool          # False: a dry run, or nothing could be pruned (see message)
    message: str = ""
    server: str = ""    # which server, for a site on many servers


async def prune(bench: Workbench, desired: DesiredState, only: str | None, keep: int | None,
                dry_run: bool) -> list[PruneResult]:
    decls = desired.owned(desired.load())
    if only is not None and only in desired.skipped:
        return [PruneResult(only, [], False, desired.skipped[only])]
    sites = [s for s in decls.sites.values() if only in (None, s.domain)]
    results: list[PruneResult] = []
    for site in sorted(sites, key=lambda s: s.domain):
        for server in site.targets:
            try:
                result = await _prune_site(bench, site, keep, dry_run, decls.commit, server)
            except Exception as exc:
                result = PruneResult(site.domain, [], False, outcome_of(exc, site.domain, server).message)
            if len(site.targets) > 1:
                result = dataclasses.replace(result, message=f"{server}: {result.message}" if result.message
                                             else "", server=server)
            results.append(result)
    return results


def _refusal(facts: SiteFacts) -> str | None:
    if facts.problem is not None:
        return f"{facts.problem}; not pruning"
    if facts.active_release is None:
        return "active release unknown; not pruning"
    return None


async def _prune_site(bench: Workbench, site: SiteDeclaration, keep: int | None, dry_run: bool,
                      decl_commit: str | None, server: str) -> PruneResult:
    ctx = bench.context(site, decl_commit, server)

    def candidates(facts: SiteFacts) -> list[str]:
        return prune_candidates(facts.ordered(), keep if keep is not None else site.keep,
                                facts.active_release, site.pin, keep_failed=site.keep_failed)

    if dry_run:
        facts = (await bench.probe(server, [site])).sites[site.domain]
        if (why := _refusal(facts)) is not None:
            return PruneResult(site.domain, [], False, why)
        return PruneResult(site.domain, candidates(facts), False)
    async with bench.site_lock(ctx, "prune") as facts:
        if (why := _refusal(facts)) is not None:
            return PruneResult(site.domain, [], False, why)
        adopt(bench.store, site.domain, facts, locked=True, server=server)
        names = candidates(facts)
        if names:
            await apply.prune(ctx, tuple(names))
        return PruneResult(site.domain, names, True)
