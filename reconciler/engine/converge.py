"""One reconcile pass: declarations -> facts per server -> plan per site -> apply.

Servers are probed concurrently, one command each; sites then converge concurrently under
a global limit, one action sequence per site at a time. The CLI pass and the daemon share
`converge_server`, and every exception met while working on a site becomes that site's
outcome through `outcome.outcome_of`: nothing one site does reaches another.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Set
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeAlias

from reconciler.config import Settings
from reconciler.core.declarations import Declarations, SiteDeclaration, refuse_local
from reconciler.core.facts import BranchHead, ProbeSite, ServerFacts, SiteFacts
from reconciler.core.layout import parse_release
from reconciler.core.plan import (
    Activate,
    Clean,
    Deploy,
    FailureMemory,
    Plan,
    Provision,
    Prune,
    Relink,
    Reload,
    health_of,
    prune_candidates,
)
from reconciler.core.reasons import RequestKind, SwitchReason
from reconciler.core.rollout import plan_site
from reconciler.core.shard import Shard, split
from reconciler.core.status import UNFINISHED, DeployStatus, Health, Step, Sync
from reconciler.engine import apply, heap, source, trust, twophase, upstream
from reconciler.engine.fairness import FairLimiter
from reconciler.engine.outcome import RELOAD_RETRY, Applied, SiteOutcome, outcome_of
from reconciler.engine.store import Snapshot, Store
from reconciler.errors import (
    ConfigError,
    DeclarationError,
    LayoutConflict,
    LockNotReleased,
    PermanentError,
    RepoUnreachable,
    StepFailed,
)
from reconciler.remote import health as health_checks
from reconciler.remote import lock, shell
from reconciler.remote.health import HealthResult
from reconciler.remote.probe import gather
from reconciler.remote.transport.options import SshOptions
from reconciler.remote.transport.pool import TransportPool

log = logging.getLogger(__name__)

LAST_VERIFIED = "last_verified_commit"
LAST_OVERRIDE = "last_trust_override"  # JSON of the last `reconciler accept`: commit, replaced, by, at


def ssh_options(settings: Settings) -> SshOptions:
    return SshOptions(settings.identity_file, settings.known_hosts, settings.ssh_config,
                      settings.connect_timeout)


def failure_memory(store: Store, domain: str, facts: SiteFacts, server: str | None = None,
                   rows: list[dict[str, Any]] | None = None) -> FailureMemory:
    """Failures remembered in the store and in failed manifests on the server, less those an
    operator forgave (`retry`). `rows`: the site's deployment rows already read (a snapshot)."""
    failed: dict[tuple[str, str], str] = {}
    if rows is None:
        forgiven = store.forgiven(domain, server)
        remembered = list(store.failures(domain, server))
    else:
        mine = [r for r in rows if server is None or r.get("server") == server]
        forgiven = {r["release"] for r in mine if r.get("forgiven")}
        remembered = [(r["commit_sha"], r["build_key"], r["message"] or "deployment failed") for r in mine
                      if r["status"] == DeployStatus.FAILED and not r.get("transient") and not r.get("forgiven")
                      and r["commit_sha"] and r["build_key"]]
    for release in facts.releases.values():
        manifest = release.manifest
        if manifest is not None and manifest.status == DeployStatus.FAILED and release.name not in forgiven:
            failed[(manifest.commit, manifest.build_key)] = manifest.message or "deployment failed"
    for commit, key, message in remembered:
        failed[(commit, key)] = message
    return FailureMemory(failed)


class Reconciler:
    """Converges declared sites: loads desired state (the verified commit), probes servers,
    plans each site and applies the plan under the site's lock. One instance per process;
    the CLI makes one per command, the daemon keeps one for its lifetime."""

    def __init__(self, settings: Settings, store: Store, pool: TransportPool | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 progress: Callable[[str, str], None] | None = None) -> None:
        self.settings = settings
        self.store = store
        self.pool = pool or TransportPool(ssh_options(settings))
        self.pool.allow_local = settings.allow_local
        self.clock = clock
        self.progress = progress
        self.on_health_check: Callable[[float], None] | None = None  # metrics: seconds per health round
        self.notice = ""  # why the desired state is not the branch tip (unsigned tip), if it is not
        self.fetch_problem = ""  # the declarations' Git host could not be reached (repo is a URL)
        self._parsed: Declarations | None = None
        self._blobs = source.BlobCache()  # the last commit's parse results by blob: a pin parses one file
        # The global limit, shared fairly between servers (engine/fairness.py).
        self._limit: FairLimiter[SlotKey] = FairLimiter(settings.concurrency, self._slot_cap)
        # Sites of other shards left alone by the last pass or prune (domain -> why).
        self.skipped: dict[str, str] = {}
        self._split: tuple[Any, ...] | None = None

    @functools.cached_property
    def identity(self) -> lock.Identity:
        """Who holds our locks. Loaded (and the state dir created) on first use, so commands that
        only look (diff, dry runs) never create state."""
        return lock.Identity.load(self.settings.state_dir)

    def reconfigure(self, settings: Settings) -> None:
        """New settings from SIGHUP: timeouts and limits apply to work started from now on."""
        self.settings = settings
        self.pool.allow_local = settings.allow_local
        self._limit.reconfigure(settings.concurrency)

    def _slot_cap(self, key: SlotKey) -> int | None:
        """A server takes no more slots than its transport runs commands at once; a group of
        servers (a many-server site) no more than the smallest of them."""
        caps = [cap for server in ((key,) if isinstance(key, str) else key)
                if (cap := self.pool.session_cap(server)) is not None]
        return min(caps) if caps else None

    @property
    def shard(self) -> Shard:
        return Shard.parse(self.settings.shard)

    def owned(self, decls: Declarations) -> Declarations:
        """The sites of `decls` this instance's shard owns; the others go to `skipped`, never
        probed, locked or recorded here (another instance owns their servers)."""
        shard = self.shard
        last = self._split
        # The daemon asks at every wake-up with the same parsed sites: split them once.
        if last is not None and last[0] is decls.sites and last[1] is decls.invalid and last[2] == shard:
            owned_sites, owned_invalid, self.skipped = last[3], last[4], last[5]
            return dataclasses.replace(decls, sites=owned_sites, invalid=owned_invalid)
        owned, self.skipped = split(decls, shard)
        self._split = (decls.sites, decls.invalid, shard, owned.sites, owned.invalid, self.skipped)
        return owned

    def load(self) -> Declarations:
        """Desired state: the branch tip, or with `require_signed` the newest verified commit."""
        choice = self._choose(self.store.meta(LAST_VERIFIED))
        parsed = self._cached(choice.commit) or source.load_commit(self.settings.local_repo, choice.commit,
                                                                        self._blobs)
        return self._settle_load(choice, parsed)

    async def load_async(self) -> Declarations:
        """`load` for the daemon's event loop: resolving, verifying (git subprocesses) and parsing
        (up to thousands of files) run in a worker thread, so a large or hostile declarations
        commit never stalls the loop (HTTP, watchdog, other sites). The store stays on the loop."""
        choice = await asyncio.to_thread(self._choose, self.store.meta(LAST_VERIFIED))
        parsed = self._cached(choice.commit)
        if parsed is None:
            parsed = await asyncio.to_thread(source.load_commit, self.settings.local_repo, choice.commit, self._blobs)
        return self._settle_load(choice, parsed)

    def _cached(self, commit: str) -> Declarations | None:
        """The parsed declarations of `commit` if they are the last ones parsed (the daemon asks
        before every switch; a commit is parsed once)."""
        parsed = self._parsed
        return parsed if parsed is not None and parsed.commit == commit else None

    def _choose(self, last_verified: str | None) -> trust.Choice:
        """Which commit is desired state now. Blocking (git), touches no store: thread-safe."""
        settings = self.settings
        return trust.choose(settings, source.tip_commit(settings.local_repo, settings.branch), last_verified)

    def accept(self, name: str | None, by: str) -> tuple[str, str | None]:
        """The operator's override for a validly signed commit that does not descend from the last
        verified one (a deliberate reset or rewrite): it becomes the last verified commit, and the
        override is logged and kept in the store. The signature is still required. Returns
        (accepted commit, the last verified commit it replaced)."""
        settings = self.settings
        if settings.require_signed == "off":
            raise ConfigError('accept is for require_signed = "head"; nothing to accept')
        commit = source.resolve_commit(settings.local_repo, name or settings.branch)
        tip = source.tip_commit(settings.local_repo, settings.branch)
        if not source.descends(settings.local_repo, tip, commit):
            raise DeclarationError(f"{commit[:12]} is not on {settings.branch} (its tip {tip[:12]} does not "
                                   "descend from it); nothing accepted")
        problem = trust.verify(settings.local_repo, commit, settings)
        if problem is not None:
            raise DeclarationError(f"declarations commit {commit[:12]} {problem}; nothing accepted")
        previous = self.store.meta(LAST_VERIFIED)
        self.store.set_meta(LAST_VERIFIED, commit)
        self.store.set_meta(LAST_OVERRIDE, json.dumps({"commit": commit, "replaced": previous, "by": by,
                                                       "at": self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")}))
        log.warning("trust override by %s: declarations commit %s accepted as verified (replacing %s)",
                    by, commit[:12], (previous or "none")[:12])
        return commit, previous

    async def refresh_upstream(self) -> bool:
        """Fetch the declarations' Git host into the mirror (when `repo` is a URL). False when it
        cannot be reached: the last fetched commit stays in force and every site's status says
        so (like Argo CD's ComparisonError). Raises only when there is no mirror at all yet."""
        if self.settings.repo_url is None:
            return True
        try:
            await asyncio.to_thread(upstream.Upstream(self.settings).fetch)
        except RepoUnreachable as exc:
            self.fetch_problem = f"{exc}; the last fetched declarations stay in force"
            if not upstream.fetched(self.settings):
                raise  # nothing fetched yet: there is no last commit to keep
            return False
        self.fetch_problem = ""
        return True

    def _settle_load(self, choice: trust.Choice, parsed: Declarations) -> Declarations:
        if parsed is not self._parsed:
            heap.settle_soon()  # they live until the next commit: out of the cyclic collector's way
        self._parsed = parsed
        if choice.verified:
            self.store.set_meta(LAST_VERIFIED, choice.commit)
        self.notice = "; ".join(n for n in (self.fetch_problem, choice.notice) if n)
        # A copy (the cache keeps what was parsed), with local sites refused unless the settings allow them.
        decls = refuse_local(dataclasses.replace(parsed), self.settings.allow_local)
        decls.notice = self.notice
        return decls

    async def probe(self, server: str, sites: list[SiteDeclaration]) -> ServerFacts:
        probes = [ProbeSite(s.domain, s.base_path, tuple(s.shared)) for s in sites]
        # (repository, refs/heads/B or refs/tags/T); a pinned or commit site resolves nothing.
        heads = [key for s in sites if (key := s.head_key) is not None]
        return await gather(self.pool.get(server), probes, heads, timeout=self.settings.command_timeout,
                            git_timeout=self.settings.git_timeout)

    def record_invalid(self, decls: Declarations, only: str | None = None,
                       dry_run: bool = False) -> list[SiteOutcome]:
        """Invalid declarations: reported, never touched."""
        outcomes = []
        for domain, invalid in decls.invalid.items():
            if only in (None, domain):
                outcomes.append(SiteOutcome(domain, invalid.server, Sync.INVALID, Health.UNKNOWN, invalid.message))
                if not dry_run:
                    self.store.update_site(domain, server=invalid.server, sync=Sync.INVALID,
                                           health=Health.UNKNOWN, message=invalid.message,
                                           declarations_commit=decls.commit)
        return outcomes

    async def run_pass(self, only: str | None = None, dry_run: bool = False) -> list[SiteOutcome]:
        decls = self.owned(self.load())
        outcomes = self.record_invalid(decls, only, dry_run)
        by_server: dict[str, list[SiteDeclaration]] = defaultdict(list)
        many: list[SiteDeclaration] = []
        for site in decls.sites.values():
            if only in (None, site.domain):
                (many.append(site) if site.as_fleet else by_server[site.server].append(site))
        rounds = await asyncio.gather(*(
            self.converge_server(server, sites, decls.commit, dry_run=dry_run)
            for server, sites in by_server.items()
        ))
        for batch in rounds:
            outcomes.extend(batch.outcomes)
        outcomes += await asyncio.gather(*(self.converge_many(site, decls.commit, dry_run) for site in many))
        return sorted(outcomes, key=lambda o: o.domain)

    async def converge_server(self, server: str, sites: list[SiteDeclaration], decl_commit: str | None, *,
                              dry_run: bool = False, eager: Set[str] = frozenset(),
                              still_desired: Callable[[SiteDeclaration], bool] | None = None,
                              on_outcome: Callable[[SiteOutcome], None] | None = None) -> ServerRound:
        """Probe `server` once for `sites` and converge each of them. Never raises: a probe that
        fails is every one of these sites' outcome (they share the server), a site's failure is
        its own. Pinned sites in `eager` (a rollback that just landed) skip the probe: their lock
        command probes too, one round trip less between the commit and the switch.
        `on_outcome` (must not raise) is told each converged site's outcome as soon as it is
        known, so the daemon frees a site without waiting for its server's slowest deploy."""
        hurry = [s for s in sites if s.domain in eager and not dry_run]
        rest = [s for s in sites if s not in hurry]
        # Started now, not at the gather below: a pin's lock command must not wait for the probe.
        early = [asyncio.ensure_future(_told(self.converge_site(s, None, decl_commit, still_desired=still_desired),
                                             on_outcome)) for s in hurry]
        work: list[Coroutine[Any, Any, SiteOutcome]] = []
        reached = not rest
        outcomes: list[SiteOutcome] = []
        try:
            reached = await self._probe_round(server, rest, decl_commit, dry_run, still_desired, work, outcomes,
                                              reached)
        except BaseException:
            for task in early:
                task.cancel()
            raise
        outcomes += await asyncio.gather(*early, *(_told(one, on_outcome) for one in work))
        return ServerRound(server, outcomes, reached)

    async def _probe_round(self, server: str, rest: list[SiteDeclaration], decl_commit: str | None, dry_run: bool,
                           still_desired: Callable[[SiteDeclaration], bool] | None,
                           work: list[Coroutine[Any, Any, SiteOutcome]], outcomes: list[SiteOutcome],
                           reached: bool) -> bool:
        """Probe `server` for `rest`: their work goes to `work`, a failed probe's outcomes to
        `outcomes`. Returns whether the server was reached."""
        if rest:
            try:
                facts = await self.probe(server, rest)
            except Exception as exc:
                for site in rest:
                    outcome = outcome_of(exc, site.domain, server)
                    outcomes.append(outcome)
                    if not dry_run:
                        self._record(site, None, None, outcome, decl_commit)
            else:
                reached = True
                checked: dict[str, HealthResult] = {}
                snapshot = None
                if not dry_run:
                    self._observed(server)
                    checked = await self._check_live(server, rest, facts)
                    snapshot = self._snapshot([s.domain for s in rest])
                work += [self.converge_site(s, facts, decl_commit, dry_run, still_desired=still_desired,
                                            checked=checked.get(s.domain), snapshot=snapshot)
                         for s in rest]
        return reached

    async def _check_live(self, server: str, sites: list[SiteDeclaration], facts: ServerFacts
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
            results = await health_checks.run(self.pool.get(server), list(probes.values()))
        except Exception as exc:
            results = [HealthResult(False, f"the health check could not run: {exc}")] * len(probes)
        if self.on_health_check is not None:
            self.on_health_check(asyncio.get_running_loop().time() - started)
        return dict(zip(probes, results, strict=True))

    async def converge_many(self, site: SiteDeclaration, decl_commit: str | None, dry_run: bool = False
                            ) -> SiteOutcome:
        """A site on many servers: two phases (engine/twophase.py). Never raises."""
        async with self._limit.slot(group_key(site)):
            outcome = await twophase.converge(self, site, decl_commit, dry_run)
        if not dry_run:
            self._record(site, None, None, outcome, decl_commit)
        return outcome

    def _snapshot(self, domains: list[str]) -> Snapshot | None:
        """The round's rows at once (issue 15: a no-op pass read a dozen rows per site). None: read
        per site as before, should the snapshot itself fail."""
        try:
            return self.store.snapshot(domains)
        except Exception:
            log.exception("could not read the state of %d site(s) at once", len(domains))
            return None

    def _observed(self, server: str) -> None:
        try:
            self.store.observed(server, self.clock())
        except Exception:
            log.exception("%s: could not record the probe time", server)

    async def converge_site(self, site: SiteDeclaration, server_facts: ServerFacts | None,
                            decl_commit: str | None, dry_run: bool = False, *,
                            still_desired: Callable[[SiteDeclaration], bool] | None = None,
                            checked: HealthResult | None = None, snapshot: Snapshot | None = None) -> SiteOutcome:
        """Plan one site from its server's facts; when there is work, take a slot of the global
        limit (shared fairly between servers) and the site's lock, re-plan from facts probed
        under the lock, and apply. `still_desired` is asked right
        before a switch. Without `server_facts` (a pinned site whose declaration just changed:
        a rollback, which wants speed) it goes straight to the lock, whose command probes too.
        Never raises (but for cancellation): see `outcome.outcome_of`."""
        work = _SiteWork(site, decl_commit, snapshot=snapshot)
        try:
            outcome = await self._converge(work, server_facts, dry_run, still_desired)
            if checked is not None and not outcome.switched:
                _report_health(outcome, checked)
        except Exception as exc:
            health_now = health_of(work.facts) if work.facts is not None else Health.UNKNOWN
            outcome = outcome_of(exc, site.domain, site.server, health_now, work.applied)
        if not dry_run:
            # Nothing was planned: the round's snapshot still holds this site's rows.
            quiet = work.snapshot if work.plan is not None and not work.plan.actions else None
            self._record(site, work.plan, work.facts, outcome, decl_commit, quiet)
        return outcome

    async def _converge(self, work: _SiteWork, server_facts: ServerFacts | None, dry_run: bool,
                        still_desired: Callable[[SiteDeclaration], bool] | None) -> SiteOutcome:
        site = work.site
        if server_facts is None:
            assert not dry_run, "only a pin or an unpin that just landed skips the probe"
            work.facts = SiteFacts(site.domain, site.base_path)
            if site.pin is not None:
                async with self._limit.slot(site.server):
                    return await self._locked(work, None, still_desired, activate=site.pin)
            back = self._unpin_target(site)
            if back is not None:
                try:
                    async with self._limit.slot(site.server):
                        return await self._locked(work, None, still_desired, activate=back[0], head_check=back[1])
                except _NotSwitched:
                    work.applied.clear()
            # Not switched in the lock command (nothing to go back to, or the head moved): probe.
            server_facts = await self.probe(site.server, [site])
        facts = work.facts = server_facts.sites[site.domain]
        head = server_facts.heads.get(key) if (key := site.head_key) is not None else None
        snap = work.snapshot
        rows = snap.deployments.get(site.domain) if snap is not None else None
        if not dry_run and self.store.adopt(site.domain, facts, server=site.server, rows=rows):
            snap = work.snapshot = None  # the rows moved: read them afresh
            rows = None
        # Half-built releases can only be cleaned while nobody holds the lock (builders do).
        request = snap.requests.get(site.domain) if snap is not None else self.store.pending_request(site.domain)
        memory = failure_memory(self.store, site.domain, facts, site.server, rows)
        plan = work.plan = plan_site(site, facts, head, memory,
                                     self.clock(), clean_interrupted=facts.lock is None,
                                     fresh_after=_fresh_after(request),
                                     reload_owed=_reload_owed(self.store, site.domain, snap))
        if dry_run:
            owner = lock.Owner.from_text(facts.lock or "") if facts.lock else None
            if owner is not None and plan.actions and not lock.left_by_dead_run(owner, self.identity):
                # Someone is changing the site right now: what they do is not ours to plan twice.
                return SiteOutcome(site.domain, site.server, Sync.PROGRESSING, plan.health,
                                   f"locked by {owner.describe()}: a change is in progress")
            return SiteOutcome(site.domain, site.server, plan.sync, plan.health, plan.message,
                               planned=list(plan.actions))
        # A run of ours that died mid-way leaves its lock and unfinished rows: settle them
        # under the lock even when there is nothing else to do.
        dead_lock = facts.lock is not None and lock.left_by_dead_run(lock.Owner.from_text(facts.lock), self.identity)
        leftovers = dead_lock or \
            (_unfinished(rows, site.server) if rows is not None else self.store.unfinished(site.domain, site.server))
        if not plan.actions and not leftovers:
            if request is not None and plan.sync == Sync.SYNCED:
                self.store.clear_request(site.domain, request["at"])  # nothing left to build: moot
            return SiteOutcome(site.domain, site.server, plan.sync, plan.health, plan.message)
        purpose = "; ".join(a.describe() for a in plan.actions)[:200]
        # Only remote work takes a slot of the global limit: a site with nothing to do never
        # waits behind its server's deploys (a mass change would hold its status for minutes).
        async with self._limit.slot(site.server):
            return await self._locked(work, head, still_desired, purpose)

    async def _locked(self, work: _SiteWork, head: BranchHead | None,
                      still_desired: Callable[[SiteDeclaration], bool] | None,
                      purpose: str = "reconcile", activate: str | None = None,
                      head_check: shell.HeadCheck | None = None) -> SiteOutcome:
        """Take the site's lock, re-plan from the facts probed under it, apply, release. With
        `activate` (a pin that just landed) the lock command itself switches to the pinned release
        when it is there and good: live one round trip after the commit; the bookkeeping follows.
        With `head_check` too (an unpin: `activate` is the branch head's build) it switches only
        while the head is that build's commit, and raises _NotSwitched (lock released) otherwise:
        the caller then probes, for the head."""
        site = work.site
        desired = None if still_desired is None else (lambda: still_desired(site))
        ctx = self._context(site, work.decl_commit, desired)
        request = self.store.pending_request(site.domain)
        if request is not None:
            ctx.trigger, ctx.requested_by = RequestKind(request["kind"]), request["by"]
        outcome: SiteOutcome | None = None
        try:
            async with self._site_lock(ctx, purpose, stage_script=activate is None, activate=activate,
                                       head=head_check) as fresh:
                facts = work.facts = fresh
                previous = (self.store.site(site.domain) or {}).get("active_release")
                if head_check is not None:
                    if ctx.lease is None or ctx.lease.switched is None:
                        raise _NotSwitched()
                    head = BranchHead(head_check.commit)  # verified by the lock command, under the lock
                self.store.adopt(site.domain, facts, locked=True, server=site.server)
                pin_checked = None
                if activate is not None and ctx.lease is not None and ctx.lease.switched is not None:
                    reason = SwitchReason.ROLLBACK if head_check is None else SwitchReason.ROLL_FORWARD
                    pin_checked = await self._switched_by_lock(ctx, activate, previous, ctx.lease.switched,
                                                               work.applied, reason)
                memory = failure_memory(self.store, site.domain, facts, site.server)
                plan = work.plan = plan_site(site, facts, head, memory,
                                             self.clock(), clean_interrupted=True, fresh_after=_fresh_after(request),
                                             reload_owed=self.store.reload_owed(site.domain),
                                             takeover=ctx.lease.takeover if ctx.lease is not None else None)
                outcome = await self._apply(ctx, plan, facts, work.applied)
                if pin_checked is not None and not pin_checked.ok:
                    # As for any activation of a pin: reported, never switched away from.
                    outcome.health = Health.DEGRADED
                    outcome.message = f"pinned release {activate} fails its health check: {pin_checked.detail}; " \
                                      "the pin holds"
                if request is not None and (plan.sync == Sync.SYNCED or any(isinstance(a, Deploy)
                                                                            for a in plan.actions)):
                    # Answered: the requested build ran (whatever its result), or nothing was left to do.
                    self.store.clear_request(site.domain, request["at"])
        except LockNotReleased as exc:
            if outcome is None:
                raise
            # The work is done and live; the lock left behind blocks the next change: say so.
            outcome.health = Health.DEGRADED
            outcome.message = "; ".join(m for m in (outcome.message, str(exc)) if m)
        assert outcome is not None
        return outcome

    async def _switched_by_lock(self, ctx: apply.SiteContext, release: str, previous: str | None, status: int,
                                done: list[Applied], reason: SwitchReason = SwitchReason.ROLLBACK
                                ) -> HealthResult | None:
        """The lock command switched to the pinned `release` (exit `status`): what an activation
        does after its switch (reload, history), as `apply.activate` would, and its health check
        (None without one)."""
        if status == shell.EXIT_NOT_A_SYMLINK:
            raise LayoutConflict(f"{ctx.paths.site_link} is not a symlink; refusing to replace it")
        if status != 0:
            raise StepFailed(Step.SWITCH, status, "", f"the switch to {release} failed (exit {status})")
        action = Activate(release, reason)
        result = await apply.activated(ctx, release, previous, *self._activation_cause(ctx, action, SiteFacts(
            ctx.site.domain, ctx.site.base_path)))
        done.append(Applied(action))
        self._reloaded(ctx.site.domain, release, result.warning)
        return await apply.check_health(ctx, release)

    def _unpin_target(self, site: SiteDeclaration) -> tuple[str, shell.HeadCheck] | None:
        """An unpin that just landed: the release to go back to (the newest successful build with
        the site's build key still on the server, as the store knows it) and what the lock command
        must find true to switch to it (the branch head is that build's commit). None when there
        is none, or the site is no branch site, or has a health check (an activation checked after
        its switch takes the probed way, where a failure switches back)."""
        key = site.head_key
        if key is None or site.ref.kind != "branch" or site.health is not None:
            return None
        rows = [r for r in self.store.deployments(site.domain)
                if r.get("server") in (None, site.server) and r["status"] == DeployStatus.SUCCESS
                and r.get("build_key") == site.build_key and r.get("deployment_path")
                and parse_release(r["release"]) is not None and r.get("commit_sha")]
        if not rows:
            return None
        newest = max(rows, key=lambda r: parse_release(r["release"]) or datetime.min.replace(tzinfo=UTC))
        seconds = shell.head_bounds(self.settings.command_timeout, self.settings.git_timeout)[0]
        return newest["release"], shell.HeadCheck(key[0], key[1], newest["commit_sha"], site.build_key, seconds)

    def _context(self, site: SiteDeclaration, decl_commit: str | None,
                 still_desired: Callable[[], bool] | None = None, *, target: str = "") -> apply.SiteContext:
        """A context on `target` (one of a many-server site's servers), else on `site.server`."""
        return apply.SiteContext(self.pool.get(target or site.server), site, self.store, self.settings.log_dir,
                                 self.settings.command_timeout, self.settings.deploy_timeout, decl_commit,
                                 still_desired, self._progress_of(site.domain),
                                 on_health_check=self.on_health_check, target=target)

    def _site_lock(self, ctx: apply.SiteContext, purpose: str, *, stage_script: bool = False,
                   activate: str | None = None, head: shell.HeadCheck | None = None
                   ) -> AbstractAsyncContextManager[SiteFacts]:
        """The site's lock, as `ctx.lease` (the last command under it may release it). With
        `stage_script`, the deploy script rides along, for a deploy the plan may ask for; with
        `activate`, the lock command switches to that release when it can (`lease.switched`).
        Held, the lock is kept fresh by a heartbeat (remote/lock.py), and it is stale once that
        heartbeat is older than a bound made of command timeouts, whatever `deploy_timeout` is."""
        settings = self.settings
        ctx.lease = lock.Lease()
        script = ctx.site.script if stage_script and ctx.site.script.strip() else None
        return lock.held(ctx.transport, ctx.paths, self.identity, purpose,
                         stale_after=lock.stale_bound(settings.command_timeout),
                         timeout=settings.command_timeout, shared=tuple(ctx.site.shared), lease=ctx.lease,
                         script=script, activate=activate, head=head,
                         heartbeat=lock.heartbeat_interval(settings.command_timeout))

    def _progress_of(self, domain: str) -> Callable[[str], None] | None:
        progress = self.progress
        if progress is None:
            return None
        return lambda step: progress(domain, step)

    async def _apply(self, ctx: apply.SiteContext, plan: Plan, facts: SiteFacts,
                     done: list[Applied]) -> SiteOutcome:
        """Carry out `plan`, appending to `done` as each action completes (so an error half-way
        still reports what was done)."""
        site = ctx.site
        sync, health, message = plan.sync, plan.health, plan.message
        deploys = any(isinstance(a, Deploy) for a in plan.actions)
        for index, action in enumerate(plan.actions):
            last = index == len(plan.actions) - 1  # nothing else under the lock: this step releases it
            if not isinstance(action, Deploy):
                ctx.step(action.describe())
            if isinstance(action, Provision):
                if not deploys:  # a deploy's claim makes the layout in its own command
                    await apply.provision(ctx)
            elif isinstance(action, Clean):
                await apply.prune(ctx, action.releases)
                for name in action.releases:
                    self.store.mark_cleaned(site.domain, name, site.server)
            elif isinstance(action, Deploy):
                result = await apply.deploy(ctx, action.release, action.commit, action.reason, facts.active_release,
                                            release_lock=last)
                if not result.ok:
                    done.append(Applied(action, failed=True, note=result.message))
                    if result.rolled_back_to is not None:
                        done.append(Applied(Activate(result.rolled_back_to, SwitchReason.AUTO_ROLLBACK)))
                    return SiteOutcome(site.domain, site.server, Sync.FAILED, health_of(facts), result.message, done)
                if result.superseded:
                    done.append(Applied(action, superseded=True, note=result.message))
                    return SiteOutcome(site.domain, site.server, Sync.OUT_OF_SYNC, health_of(facts),
                                       result.message, done)
                health, message = self._reloaded(site.domain, action.release, result.warning)
                sync = Sync.SYNCED
            elif isinstance(action, Activate):
                trigger, by = self._activation_cause(ctx, action, facts)
                result = await apply.activate(ctx, action.release, facts.active_release, trigger, by)
                health, message = self._reloaded(site.domain, action.release, result.warning)
                sync = Sync.SYNCED
                checked = await apply.check_health(ctx, action.release)
                if checked is not None and not checked.ok:
                    if action.reason == SwitchReason.ROLLBACK:
                        # The operator pinned it: report, never switch away from a pin.
                        health = Health.DEGRADED
                        message = f"pinned release {action.release} fails its health check: {checked.detail}; " \
                                  "the pin holds"
                    else:
                        done.append(Applied(action))
                        return await self._unhealthy_activation(ctx, action.release, facts, checked.detail, done)
            elif isinstance(action, Relink):
                log.warning("%s: drift: shared %s of the live release %s %s gone or replaced; relinking",
                            site.domain, ", ".join(action.entries), action.release,
                            "is" if len(action.entries) == 1 else "are")
                await apply.relink(ctx, action.release, action.entries)
                sync = Sync.SYNCED
            elif isinstance(action, Reload):
                warning = await apply.reload(ctx, action.release)
                health, message = self._reloaded(site.domain, action.release, warning)
            elif isinstance(action, Prune):
                try:
                    await apply.prune(ctx, action.releases, release_lock=last)
                except PermanentError as exc:
                    # The new release is live; old ones that would not go only cost disk.
                    done.append(Applied(action, failed=True, note=str(exc)))
                    health = Health.DEGRADED
                    message = "; ".join(m for m in (message, str(exc)) if m)
                    continue
            done.append(Applied(action))
        if sync == Sync.OUT_OF_SYNC and not message:
            message = "out of sync"
        outcome = SiteOutcome(site.domain, site.server, sync, health, message, done)
        if self.store.reload_owed(site.domain) is not None:
            # A failed reload is retried with backoff (the daemon doubles the wait), not forgotten.
            outcome.retry_after, outcome.backoff = RELOAD_RETRY, True
        return outcome

    async def _unhealthy_activation(self, ctx: apply.SiteContext, release: str, facts: SiteFacts, reason: str,
                                    done: list[Applied]) -> SiteOutcome:
        """A release switched to without a build failed its health check: back to the release
        live before, and the release is marked failed (so it is not switched to again)."""
        site = ctx.site
        message = f"health check failed after switch: {reason}"
        previous = facts.active_release
        if previous is not None and previous != release:
            await apply.switch_back(ctx, release, previous, reason)
            done.append(Applied(Activate(previous, SwitchReason.AUTO_ROLLBACK)))
            message += f"; {previous} serves again"
        found = facts.releases.get(release)
        if found is not None and found.manifest is not None:
            failed = dataclasses.replace(found.manifest, status=DeployStatus.FAILED, message=message[:500])
            await apply.mark_failed(ctx, release, failed.to_json(), message)
        return SiteOutcome(site.domain, site.server, Sync.FAILED, health_of(facts), message, done)

    def _activation_cause(self, ctx: apply.SiteContext, action: Activate,
                          facts: SiteFacts) -> tuple[SwitchReason, str]:
        """Why a release is switched to without a build, and who asked, for history: a pin is a
        rollback (asked by the author of the declarations commit applied), the pin's removal an
        unpin, a live link that is not the one we set is drift corrected; else a roll-forward."""
        row = self.store.site(ctx.site.domain) or {}
        if action.reason == SwitchReason.ROLLBACK:
            return SwitchReason.ROLLBACK, self._author(ctx.declarations_commit)
        if row.get("pinned"):
            return SwitchReason.UNPIN, self._author(ctx.declarations_commit)
        if row.get("active_release") and row.get("active_release") != facts.active_release:
            return SwitchReason.DRIFT, ""
        return action.reason, ""

    def _author(self, commit: str | None) -> str:
        try:
            return source.author_of(self.settings.local_repo, commit) if commit else ""
        except Exception:
            return ""  # history detail, never a reason to fail the switch

    def _reloaded(self, domain: str, release: str, warning: str) -> tuple[Health, str]:
        """Health after a switch's (or a retried) reload; a failure is owed a retry until it succeeds."""
        if warning:
            self.store.owe_reload(domain, release, warning)
            return Health.DEGRADED, f"{warning}; the reload is retried until it succeeds"
        self.store.owe_reload(domain, None)
        return Health.HEALTHY, ""

    async def prune(self, only: str | None, keep: int | None, dry_run: bool) -> list[PruneResult]:
        """`reconciler prune`: the same locked path as a pass. Candidates come from facts probed
        under the site's lock (a dry run probes without it and changes nothing); a site whose
        lock is held, or whose server fails, is reported and the others go on."""
        decls = self.owned(self.load())
        if only is not None and only in self.skipped:
            return [PruneResult(only, [], False, self.skipped[only])]
        sites = [s for s in decls.sites.values() if only in (None, s.domain)]
        results: list[PruneResult] = []
        for site in sorted(sites, key=lambda s: s.domain):
            for server in site.targets:  # a site on many servers: each of them, alike
                try:
                    result = await self._prune_site(site, keep, dry_run, decls.commit, server)
                except Exception as exc:
                    result = PruneResult(site.domain, [], False, outcome_of(exc, site.domain, server).message)
                if len(site.targets) > 1:
                    result = dataclasses.replace(result, message=f"{server}: {result.message}" if result.message
                                                 else "", server=server)
                results.append(result)
        return results

    async def _prune_site(self, site: SiteDeclaration, keep: int | None, dry_run: bool,
                          decl_commit: str | None, server: str) -> PruneResult:
        ctx = self._context(site, decl_commit, target=server)

        def refusal(facts: SiteFacts) -> str | None:
            if facts.problem is not None:
                return f"{facts.problem}; not pruning"
            if facts.active_release is None:
                return "active release unknown; not pruning"
            return None

        def candidates(facts: SiteFacts) -> list[str]:
            return prune_candidates(facts.ordered(), keep if keep is not None else site.keep,
                                    facts.active_release, site.pin, keep_failed=site.keep_failed)

        if dry_run:
            facts = (await self.probe(server, [site])).sites[site.domain]
            if (why := refusal(facts)) is not None:
                return PruneResult(site.domain, [], False, why)
            return PruneResult(site.domain, candidates(facts), False)
        async with self._site_lock(ctx, "prune") as facts:
            if (why := refusal(facts)) is not None:
                return PruneResult(site.domain, [], False, why)
            self.store.adopt(site.domain, facts, locked=True, server=server)
            names = candidates(facts)
            if names:
                await apply.prune(ctx, tuple(names))
            return PruneResult(site.domain, names, True)

    def _record(self, site: SiteDeclaration, plan: Plan | None, facts: SiteFacts | None, outcome: SiteOutcome,
                decl_commit: str | None, snapshot: Snapshot | None = None) -> None:
        """Write a site's outcome to the store. A store that fails here is logged, not raised:
        the outcome is still returned to the caller."""
        try:
            self._write_record(site, plan, facts, outcome, decl_commit, snapshot)
        except Exception:
            log.exception("%s: could not record the outcome", site.domain)

    def _write_record(self, site: SiteDeclaration, plan: Plan | None, facts: SiteFacts | None,
                      outcome: SiteOutcome, decl_commit: str | None, snapshot: Snapshot | None = None) -> None:
        current = snapshot.sites.get(site.domain) if snapshot is not None else None
        gone = [r["server"] for r in self.store.site_servers(site.domain)
                if r["server"] not in site.targets or len(site.targets) == 1]
        removed = [server for server in gone if server not in site.targets]
        if gone:
            self.store.forget_site_servers(site.domain, gone)
        if removed:
            log.warning("%s: %s no longer in servers: its files there are left alone", site.domain,
                        ", ".join(removed))
        note = f"{', '.join(removed)} removed from servers: its files there are left alone" if removed else ""
        values: dict[str, object] = {
            "server": twophase.label(site), "base_path": site.base_path, "sync": outcome.sync,
            "health": outcome.health, "pinned": site.pin,
            "message": "; ".join(m for m in (self.notice, outcome.message, note) if m),
            "declarations_commit": decl_commit,
        }
        if plan is None or facts is None:
            self.store.update_site(site.domain, current, **values)
            return
        values["desired_commit"] = plan.desired_commit
        # What is live now: the desired release when we got there (even if a later step then
        # failed), else what the probe saw.
        active = _live_after(outcome) or (plan.desired_release if outcome.sync == Sync.SYNCED
                                          else facts.active_release)
        if snapshot is not None:
            row = next((r for r in snapshot.deployments.get(site.domain, [])
                        if r["release"] == active and r.get("server") == site.server), None) if active else None
        else:
            row = self.store.by_release(site.domain, active, site.server) if active else None
        values.update(active_release=active, active_deployment_id=row["id"] if row else None,
                      active_commit=row["commit_sha"] if row else None)
        if row is not None and row["status"] == DeployStatus.SUCCESS:
            known = current if current is not None else self.store.site(site.domain) or {}
            if not known.get("last_deployed_at"):
                values.update(last_deployed_at=row["completed_at"] or row["started_at"],
                              last_deployment_sha=row["commit_sha"])
        self.store.update_site(site.domain, current, **values)

    async def close(self) -> None:
        await self.pool.close()


SlotKey: TypeAlias = str | tuple[str, ...]  # what the global limit is shared fairly between


def group_key(site: SiteDeclaration) -> SlotKey:
    """Whose share of the global limit a site's slot counts against: its server; for a site on
    many servers, the set of them. A many-server site works on all its servers at once, so
    charging it to its first server alone would let such sites crowd that server's own sites
    out while leaving the others' shares untouched; a key of their own per set of servers makes
    sites deployed to the same fleet take turns among themselves, one share like a server's."""
    if len(site.targets) == 1:
        return site.server
    return tuple(sorted(site.targets))


async def _told(work: Awaitable[SiteOutcome], on_outcome: Callable[[SiteOutcome], None] | None) -> SiteOutcome:
    outcome = await work
    if on_outcome is not None:
        on_outcome(outcome)
    return outcome


def _reload_owed(store: Store, domain: str, snapshot: Snapshot | None) -> tuple[str, str] | None:
    if snapshot is None:
        return store.reload_owed(domain)
    row = snapshot.sites.get(domain) or {}
    release = row.get("reload_owed")
    return (release, row.get("reload_owed_reason") or "reload failed") if release else None


def _unfinished(rows: list[dict[str, Any]], server: str) -> bool:
    return any(r["status"] in UNFINISHED and r.get("server") == server for r in rows)


def _report_health(outcome: SiteOutcome, checked: HealthResult) -> None:
    """The live release's health check, run this poll, as the site's health (never a switch)."""
    if checked.ok or outcome.health in (Health.MISSING, Health.UNKNOWN):
        return
    outcome.health = Health.DEGRADED
    note = f"health check failing: {checked.detail} (nothing switches between deploys)"
    outcome.message = "; ".join(m for m in (outcome.message, note) if m)


def _live_after(outcome: SiteOutcome) -> str | None:
    """The release the last switch of this round made live (a deploy, an activation, or the
    switch back after a failed health check), if any switch happened."""
    for applied in reversed(outcome.applied):
        action = applied.action
        if isinstance(action, Activate | Deploy) and not applied.failed and not applied.superseded:
            return action.release
    return None


def _fresh_after(request: dict[str, Any] | None) -> datetime | None:
    """For a pending `redeploy`: the time of the newest release when it was asked (builds named
    up to it do not satisfy the head). None: no request, or there was no release at all."""
    if request is None or request["kind"] != RequestKind.REDEPLOY or not request.get("after"):
        return None
    return parse_release(request["after"])


class _NotSwitched(Exception):
    """An unpin's lock command found the branch head elsewhere: the round probes instead."""


@dataclass
class _SiteWork:
    """What is known about one site while it converges, so an error at any point can still be
    recorded with the facts and plan of the moment and the actions already done."""

    site: SiteDeclaration
    decl_commit: str | None
    facts: SiteFacts | None = None
    plan: Plan | None = None
    applied: list[Applied] = field(default_factory=list)
    snapshot: Snapshot | None = None  # the round's rows, read at once (valid while nothing changed)


@dataclass(frozen=True)
class ServerRound:
    """The sites of one server after one round; `reached` is False when its probe failed."""

    server: str
    outcomes: list[SiteOutcome]
    reached: bool


@dataclass(frozen=True)
class PruneResult:
    domain: str
    releases: list[str]
    done: bool          # False: a dry run, or nothing could be pruned (see message)
    message: str = ""
    server: str = ""    # which server, for a site on many servers
