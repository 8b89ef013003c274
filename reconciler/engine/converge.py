"""The reconciler as the CLI and the daemon use it: one object over the engine's parts.

It owns nothing but their wiring: the workbench (settings, store, transports, identity, limit,
clock: engine/workbench.py), desired state (engine/desired.py), passes and server rounds
(engine/rounds.py), the one rollout executor (engine/executor.py), recording
(engine/record.py) and pruning (engine/pruning.py). Each job lives in its own module and takes
the workbench as an argument; this class only keeps the CLI's and the daemon's calls short.
"""

from __future__ import annotations

from collections.abc import Callable, Set
from datetime import UTC, datetime

from reconciler.config import Settings
from reconciler.core.declarations import Declarations, SiteDeclaration
from reconciler.core.facts import ServerFacts
from reconciler.core.shard import Shard
from reconciler.engine import executor, pruning, retention, rounds
from reconciler.engine.desired import LAST_OVERRIDE, LAST_VERIFIED, DesiredState
from reconciler.engine.fairness import FairLimiter
from reconciler.engine.outcome import SiteOutcome
from reconciler.engine.pruning import PruneResult
from reconciler.engine.rounds import ServerRound
from reconciler.engine.store import Store
from reconciler.engine.workbench import SlotKey, Workbench, group_key, ssh_options
from reconciler.remote import lock
from reconciler.remote.transport.pool import TransportPool

__all__ = ["LAST_OVERRIDE", "LAST_VERIFIED", "PruneResult", "Reconciler", "ServerRound", "SiteOutcome", "SlotKey",
           "group_key", "ssh_options"]


class Reconciler:
    """Converges declared sites. One per process; the CLI makes one per command, the daemon
    keeps one for its lifetime."""

    def __init__(self, settings: Settings, store: Store, pool: TransportPool | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 progress: Callable[[str, str], None] | None = None) -> None:
        self.bench = Workbench(settings, store, pool or TransportPool(ssh_options(settings)), clock, progress)
        self.desired = DesiredState(self.bench)

    # The parts, by the names the CLI, the daemon and the tests have always used.
    @property
    def settings(self) -> Settings:
        return self.bench.settings

    @property
    def store(self) -> Store:
        return self.bench.store

    @property
    def pool(self) -> TransportPool:
        return self.bench.pool

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.bench.clock

    @property
    def identity(self) -> lock.Identity:
        return self.bench.identity

    @property
    def on_health_check(self) -> Callable[[float], None] | None:
        return self.bench.on_health_check

    @on_health_check.setter
    def on_health_check(self, observe: Callable[[float], None] | None) -> None:
        self.bench.on_health_check = observe

    @property
    def _limit(self) -> FairLimiter[SlotKey]:
        return self.bench.limit

    @_limit.setter
    def _limit(self, limit: FairLimiter[SlotKey]) -> None:  # bench/fair.py measures a baseline limiter
        self.bench.limit = limit

    @property
    def notice(self) -> str:
        return self.desired.notice

    @property
    def fetch_problem(self) -> str:
        return self.desired.fetch_problem

    @property
    def skipped(self) -> dict[str, str]:
        return self.desired.skipped

    @property
    def shard(self) -> Shard:
        return self.desired.shard

    def reconfigure(self, settings: Settings) -> None:
        self.bench.reconfigure(settings)

    def owned(self, decls: Declarations) -> Declarations:
        return self.desired.owned(decls)

    def load(self) -> Declarations:
        return self.desired.load()

    async def load_async(self) -> Declarations:
        return await self.desired.load_async()

    def accept(self, name: str | None, by: str) -> tuple[str, str | None]:
        return self.desired.accept(name, by)

    async def refresh_upstream(self) -> bool:
        return await self.desired.refresh_upstream()

    async def probe(self, server: str, sites: list[SiteDeclaration]) -> ServerFacts:
        return await self.bench.probe(server, sites)

    def record_invalid(self, decls: Declarations, only: str | None = None,
                       dry_run: bool = False) -> list[SiteOutcome]:
        return rounds.record_invalid(self.bench, decls, only, dry_run)

    async def run_pass(self, only: str | None = None, dry_run: bool = False) -> list[SiteOutcome]:
        return await rounds.run_pass(self.bench, self.desired, only, dry_run)

    async def converge_server(self, server: str, sites: list[SiteDeclaration], decl_commit: str | None, *,
                              dry_run: bool = False, eager: Set[str] = frozenset(),
                              still_desired: Callable[[SiteDeclaration], bool] | None = None,
                              on_outcome: Callable[[SiteOutcome], None] | None = None) -> ServerRound:
        return await rounds.converge_server(self.bench, self.desired.notice, server, sites, decl_commit,
                                            dry_run=dry_run, eager=eager, still_desired=still_desired,
                                            on_outcome=on_outcome)

    async def converge_many(self, site: SiteDeclaration, decl_commit: str | None,
                            dry_run: bool = False) -> SiteOutcome:
        return await executor.converge_site(self.bench, site, decl_commit, self.desired.notice, dry_run=dry_run)

    async def prune(self, only: str | None, keep: int | None, dry_run: bool) -> list[PruneResult]:
        return await pruning.prune(self.bench, self.desired, only, keep, dry_run)

    def expire_history(self, dry_run: bool = False) -> retention.Expired | None:
        """Forget history and logs older than `retention_days` (None: the setting is off)."""
        days = self.settings.retention_days
        if days is None:
            return None
        return retention.expire(self.store, self.settings.log_dir, days, self.bench.clock(), dry_run)

    async def close(self) -> None:
        await self.bench.pool.close()
