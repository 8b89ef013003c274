"""One reconcile pass: declarations -> facts per server -> plan per site -> apply.

Servers are probed concurrently, one command each; sites then converge concurrently under
a global limit, one action sequence per site at a time.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from reconciler.config import Settings
from reconciler.core.declarations import Declarations, SiteDeclaration
from reconciler.core.facts import BranchHead, ProbeSite, ServerFacts, SiteFacts
from reconciler.core.plan import (
    DEGRADED,
    FAILED,
    HEALTHY,
    INVALID,
    OUT_OF_SYNC,
    PROGRESSING,
    SYNCED,
    UNKNOWN,
    Activate,
    Clean,
    Deploy,
    FailureMemory,
    Plan,
    Provision,
    Prune,
    health_of,
    plan_site,
)
from reconciler.engine import apply, source, trust
from reconciler.engine.store import Store
from reconciler.errors import DeclarationError, LayoutConflict, TemporaryError
from reconciler.remote import lock
from reconciler.remote.probe import gather
from reconciler.remote.transport.options import SshOptions
from reconciler.remote.transport.pool import TransportPool

LAST_VERIFIED = "last_verified_commit"


@dataclass
class SiteOutcome:
    domain: str
    server: str
    sync: str
    health: str
    message: str = ""
    actions: list[str] = field(default_factory=list)


def ssh_options(settings: Settings) -> SshOptions:
    return SshOptions(settings.identity_file, settings.known_hosts, settings.ssh_config,
                      settings.connect_timeout)


def failure_memory(store: Store, domain: str, facts: SiteFacts) -> FailureMemory:
    """Failures remembered in the store and in failed manifests on the server."""
    failed: dict[tuple[str, str], str] = {}
    for release in facts.releases.values():
        manifest = release.manifest
        if manifest is not None and manifest.status == "failed":
            failed[(manifest.commit, manifest.build_key)] = manifest.message or "deployment failed"
    for commit, key, message in store.failures(domain):
        failed[(commit, key)] = message
    return FailureMemory(failed)


class Reconciler:
    def __init__(self, settings: Settings, store: Store, pool: TransportPool | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 progress: Callable[[str, str], None] | None = None) -> None:
        self.settings = settings
        self.store = store
        self.pool = pool or TransportPool(ssh_options(settings))
        self.clock = clock
        self.progress = progress
        self.identity = lock.Identity.load(settings.state_dir)
        self.notice = ""  # why the desired state is not the branch tip (unsigned tip), if it is not
        self._parsed: Declarations | None = None
        self._limit = asyncio.Semaphore(settings.concurrency)

    def reconfigure(self, settings: Settings) -> None:
        """New settings from SIGHUP: timeouts and limits apply to work started from now on."""
        self.settings = settings
        self._limit = asyncio.Semaphore(settings.concurrency)

    def _load_commit(self, commit: str) -> Declarations:
        """Parsed declarations of a commit, cached: the daemon asks before every switch."""
        if self._parsed is None or self._parsed.commit != commit:
            self._parsed = source.load_commit(self.settings.repo, commit)
        return dataclasses.replace(self._parsed)

    def load(self) -> Declarations:
        """Desired state: the branch tip, or with `require_signed` the newest verified commit."""
        settings = self.settings
        self.notice = ""
        tip = source.tip_commit(settings.repo, settings.branch)
        if settings.require_signed == "off" or tip == self.store.meta(LAST_VERIFIED):
            return self._load_commit(tip)
        problem = trust.verify(settings.repo, tip, settings)
        if problem is None:
            self.store.set_meta(LAST_VERIFIED, tip)
            return self._load_commit(tip)
        last = self.store.meta(LAST_VERIFIED)
        notice = f"declarations commit {tip[:12]} {problem}; not applied"
        if last is None:
            raise DeclarationError(notice + " (no verified commit to fall back to)")
        decls = self._load_commit(last)
        decls.notice = self.notice = f"{notice}; keeping verified {last[:12]}"
        return decls

    async def probe(self, server: str, sites: list[SiteDeclaration]) -> ServerFacts:
        probes = [ProbeSite(s.domain, s.base_path) for s in sites]
        heads = [(s.repository, s.branch) for s in sites if s.pin is None]
        return await gather(self.pool.get(server), probes, heads, timeout=self.settings.command_timeout)

    async def run_pass(self, only: str | None = None, dry_run: bool = False) -> list[SiteOutcome]:
        decls = self.load()
        outcomes: list[SiteOutcome] = []
        for domain, invalid in decls.invalid.items():
            if only in (None, domain):
                outcomes.append(SiteOutcome(domain, invalid.server, INVALID, UNKNOWN, invalid.message))
                if not dry_run:
                    self.store.update_site(domain, server=invalid.server, sync=INVALID,
                                           health=UNKNOWN, message=invalid.message,
                                           declarations_commit=decls.commit)
        by_server: dict[str, list[SiteDeclaration]] = defaultdict(list)
        for site in decls.sites.values():
            if only in (None, site.domain):
                by_server[site.server].append(site)
        results = await asyncio.gather(*(
            self._server_pass(server, sites, decls.commit, dry_run)
            for server, sites in by_server.items()
        ))
        for batch in results:
            outcomes.extend(batch)
        return sorted(outcomes, key=lambda o: o.domain)

    async def _server_pass(self, server: str, sites: list[SiteDeclaration], decl_commit: str | None,
                           dry_run: bool) -> list[SiteOutcome]:
        try:
            facts = await self.probe(server, sites)
        except TemporaryError as exc:
            outcomes = []
            for site in sites:
                outcomes.append(SiteOutcome(site.domain, server, UNKNOWN, UNKNOWN, str(exc)))
                if not dry_run:
                    self.store.update_site(site.domain, server=server, sync=UNKNOWN, health=UNKNOWN,
                                           message=str(exc), declarations_commit=decl_commit)
            return outcomes
        return list(await asyncio.gather(*(
            self.converge_site(site, facts, decl_commit, dry_run) for site in sites
        )))

    async def converge_site(self, site: SiteDeclaration, server_facts: ServerFacts | None,
                            decl_commit: str | None, dry_run: bool = False, *,
                            still_desired: Callable[[], bool] | None = None) -> SiteOutcome:
        """Plan one site from its server's facts; when there is work, take the site's lock,
        re-plan from facts probed under the lock, and apply. `still_desired` is asked right
        before a switch. Without `server_facts` (a pinned site whose declaration just changed:
        a rollback, which wants speed) it goes straight to the lock, whose command probes too."""
        async with self._limit:
            if server_facts is None:
                assert site.pin is not None and not dry_run, "only pinned sites skip the probe"
                facts = SiteFacts(site.domain, site.base_path)
                return await self._locked(site, facts, None, decl_commit, still_desired)
            facts = server_facts.sites[site.domain]
            head = server_facts.heads.get((site.repository, site.branch))
            if not dry_run:
                self.store.adopt(site.domain, facts)
            # Half-built releases can only be cleaned while nobody holds the lock (builders do).
            plan = plan_site(site, facts, head, failure_memory(self.store, site.domain, facts), self.clock(),
                             clean_interrupted=facts.lock is None)
            if dry_run:
                return SiteOutcome(site.domain, site.server, plan.sync, plan.health, plan.message,
                                   [a.describe() for a in plan.actions])
            # A run of ours that died mid-way leaves its lock and unfinished rows: settle them
            # under the lock even when there is nothing else to do.
            leftovers = lock.left_by_dead_run(lock.Owner.from_text(facts.lock or ""), self.identity) or \
                self.store.unfinished(site.domain)
            if not plan.actions and not leftovers:
                outcome = SiteOutcome(site.domain, site.server, plan.sync, plan.health, plan.message)
                self._record(site, plan, facts, outcome, decl_commit)
                return outcome
            purpose = "; ".join(a.describe() for a in plan.actions)[:200]
            return await self._locked(site, facts, head, decl_commit, still_desired, plan, purpose)

    async def _locked(self, site: SiteDeclaration, facts: SiteFacts, head: BranchHead | None,
                      decl_commit: str | None, still_desired: Callable[[], bool] | None,
                      plan: Plan | None = None, purpose: str = "reconcile") -> SiteOutcome:
        """Take the site's lock, re-plan from the facts probed under it, apply, release."""
        if plan is None:
            plan = plan_site(site, facts, head, failure_memory(self.store, site.domain, facts), self.clock())
        ctx = apply.SiteContext(self.pool.get(site.server), site, self.store, self.settings.log_dir,
                                self.settings.command_timeout, self.settings.deploy_timeout, decl_commit,
                                still_desired, self._progress_of(site.domain))
        try:
            async with lock.held(ctx.transport, ctx.paths, self.identity, purpose,
                                 stale_after=self.settings.deploy_timeout + 2 * self.settings.command_timeout,
                                 timeout=self.settings.command_timeout) as fresh:
                facts = fresh
                self.store.adopt(site.domain, facts, locked=True)
                plan = plan_site(site, facts, head, failure_memory(self.store, site.domain, facts),
                                 self.clock(), clean_interrupted=True)
                outcome = await self._apply(ctx, plan, facts)
        except lock.SiteLocked as exc:
            outcome = SiteOutcome(site.domain, site.server, PROGRESSING, health_of(facts), str(exc))
        except TemporaryError as exc:
            outcome = SiteOutcome(site.domain, site.server, UNKNOWN, UNKNOWN, str(exc))
        except LayoutConflict as exc:
            outcome = SiteOutcome(site.domain, site.server, FAILED, DEGRADED, str(exc))
        self._record(site, plan, facts, outcome, decl_commit)
        return outcome

    def _progress_of(self, domain: str) -> Callable[[str], None] | None:
        progress = self.progress
        if progress is None:
            return None
        return lambda step: progress(domain, step)

    async def _apply(self, ctx: apply.SiteContext, plan: Plan, facts: SiteFacts) -> SiteOutcome:
        site = ctx.site
        done: list[str] = []
        sync, health, message = plan.sync, plan.health, plan.message
        for action in plan.actions:
            if not isinstance(action, Deploy):
                ctx.step(action.describe())
            if isinstance(action, Provision):
                await apply.provision(ctx)
            elif isinstance(action, Clean):
                await apply.prune(ctx, action.releases)
                for name in action.releases:
                    self.store.mark_cleaned(site.domain, name)
            elif isinstance(action, Deploy):
                result = await apply.deploy(ctx, action.release, action.commit)
                if not result.ok:
                    done.append(f"deploy {action.release} failed")
                    return SiteOutcome(site.domain, site.server, FAILED, health_of(facts), result.message, done)
                if result.superseded:
                    done.append(f"built {action.release}; not switched: {result.message}")
                    return SiteOutcome(site.domain, site.server, OUT_OF_SYNC, health_of(facts), result.message, done)
                health, message = (DEGRADED, result.warning) if result.warning else (HEALTHY, "")
                sync = SYNCED
            elif isinstance(action, Activate):
                result = await apply.activate(ctx, action.release)
                health, message = (DEGRADED, result.warning) if result.warning else (HEALTHY, "")
                sync = SYNCED
            elif isinstance(action, Prune):
                await apply.prune(ctx, action.releases)
            done.append(action.describe())
        if sync == OUT_OF_SYNC and not message:
            message = "out of sync"
        return SiteOutcome(site.domain, site.server, sync, health, message, done)

    def _record(self, site: SiteDeclaration, plan: Plan, facts: SiteFacts, outcome: SiteOutcome,
                decl_commit: str | None) -> None:
        values: dict[str, object] = {
            "server": site.server, "base_path": site.base_path, "sync": outcome.sync,
            "health": outcome.health, "pinned": site.pin,
            "message": "; ".join(m for m in (self.notice, outcome.message) if m),
            "desired_commit": plan.desired_commit, "declarations_commit": decl_commit,
        }
        # What is live now: the desired release when we got there, else what the probe saw.
        active = plan.desired_release if outcome.sync == SYNCED else facts.active_release
        row = self.store.by_release(site.domain, active) if active else None
        values.update(active_release=active, active_deployment_id=row["id"] if row else None,
                      active_commit=row["commit_sha"] if row else None)
        if row is not None and row["status"] == "success":
            current = self.store.site(site.domain) or {}
            if not current.get("last_deployed_at"):
                values.update(last_deployed_at=row["completed_at"] or row["started_at"],
                              last_deployment_sha=row["commit_sha"])
        self.store.update_site(site.domain, **values)

    async def close(self) -> None:
        await self.pool.close()
