"""The workbench: the parts every job of the engine works with, passed explicitly (settings,
state database, transport pool, lock identity, global limit, clock, progress), and the few
things made from them alone: a site's context on one server, its lock, a server's probe.

One per process (the CLI makes one per command, the daemon one for its lifetime); the jobs
(choosing desired state, server rounds, the rollout executor, recording, pruning) take it as an
argument instead of reaching into a god object.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeAlias

from reconciler.config import Settings
from reconciler.core.declarations import SiteDeclaration
from reconciler.core.facts import ProbeSite, ServerFacts, SiteFacts
from reconciler.engine import apply
from reconciler.engine.fairness import FairLimiter
from reconciler.engine.store import Store
from reconciler.remote import lock
from reconciler.remote.probe import gather
from reconciler.remote.protocol import locking
from reconciler.remote.transport.options import SshOptions
from reconciler.remote.transport.pool import TransportPool

SlotKey: TypeAlias = str | tuple[str, ...]  # what the global limit is shared fairly between


def ssh_options(settings: Settings) -> SshOptions:
    return SshOptions(settings.identity_file, settings.known_hosts, settings.ssh_config,
                      settings.connect_timeout)


def group_key(site: SiteDeclaration) -> SlotKey:
    """Whose share of the global limit a site's slot counts against: its server; for a site on
    many servers, the set of them. A many-server site works on all its servers at once, so
    charging it to its first server alone would let such sites crowd that server's own sites
    out while leaving the others' shares untouched; a key of their own per set of servers makes
    sites deployed to the same fleet take turns among themselves, one share like a server's."""
    if len(site.targets) == 1:
        return site.server
    return tuple(sorted(site.targets))


@dataclass
class Workbench:
    settings: Settings
    store: Store
    pool: TransportPool
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    progress: Callable[[str, str], None] | None = None   # (domain, step): live progress of `reconcile`
    on_health_check: Callable[[float], None] | None = None  # metrics: seconds per health round
    # Who runs `reconcile --override-window`: deploy windows hold nothing in this process's passes,
    # and history names them. None: windows hold.
    override_window: str | None = None
    limit: FairLimiter[SlotKey] = field(init=False)

    def __post_init__(self) -> None:
        self.pool.allow_local = self.settings.allow_local
        # The global limit, shared fairly between servers (engine/fairness.py).
        self.limit = FairLimiter(self.settings.concurrency, self._slot_cap)

    @functools.cached_property
    def identity(self) -> lock.Identity:
        """Who holds our locks. Loaded (and the state dir created) on first use, so commands that
        only look (diff, dry runs) never create state."""
        return lock.Identity.load(self.settings.state_dir)

    def reconfigure(self, settings: Settings) -> None:
        """New settings from SIGHUP: timeouts and limits apply to work started from now on."""
        self.settings = settings
        self.pool.allow_local = settings.allow_local
        self.limit.reconfigure(settings.concurrency)

    def _slot_cap(self, key: SlotKey) -> int | None:
        """A server takes no more slots than its transport runs commands at once; a group of
        servers (a many-server site) no more than the smallest of them."""
        caps = [cap for server in ((key,) if isinstance(key, str) else key)
                if (cap := self.pool.session_cap(server)) is not None]
        return min(caps) if caps else None

    async def probe(self, server: str, sites: list[SiteDeclaration]) -> ServerFacts:
        """One command: the facts of `sites` on `server` and the heads of their refs."""
        probes = [ProbeSite(s.domain, s.base_path, tuple(s.shared), s.env is not None) for s in sites]
        # (repository, refs/heads/B or refs/tags/T); a pinned or commit site resolves nothing.
        heads = [key for s in sites if (key := s.head_key) is not None]
        return await gather(self.pool.get(server), probes, heads, timeout=self.settings.command_timeout,
                            git_timeout=self.settings.git_timeout)

    def context(self, site: SiteDeclaration, decl_commit: str | None, server: str = "",
                still_desired: Callable[[], bool] | None = None) -> apply.SiteContext:
        """A site's context on `server` (one of its servers; "" is its first)."""
        settings = self.settings
        return apply.SiteContext(self.pool.get(server or site.server), site, self.store, settings.log_dir,
                                 settings.command_timeout, settings.deploy_timeout, decl_commit, still_desired,
                                 self._progress_of(site.domain), on_health_check=self.on_health_check,
                                 target=server if server != site.server else "")

    def site_lock(self, ctx: apply.SiteContext, purpose: str, *, stage_script: bool = False,
                  activate: str | None = None, head: locking.HeadCheck | None = None
                  ) -> AbstractAsyncContextManager[SiteFacts]:
        """The site's lock on the context's server, as `ctx.lease` (the last command under it may
        release it). With `stage_script`, the deploy script rides along, for a build; with
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
                         heartbeat=lock.heartbeat_interval(settings.command_timeout), env=ctx.site.env is not None)

    def _progress_of(self, domain: str) -> Callable[[str], None] | None:
        progress = self.progress
        if progress is None:
            return None
        return lambda step: progress(domain, step)
