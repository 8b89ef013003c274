"""What is known about one site while it converges (`SiteRun`): its facts and rollout of the
moment, the steps already done, each server's live release and why it is not in step. An error at
any point is recorded with all of it (engine/executor.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.core.declarations import SiteDeclaration
from reconciler.core.facts import SiteFacts
from reconciler.core.plan import health_of
from reconciler.core.rollout import Rollout
from reconciler.core.status import Health, Sync
from reconciler.engine.outcome import Applied, SiteOutcome
from reconciler.engine.record import Board, label
from reconciler.engine.store import Snapshot
from reconciler.remote.protocol.checking import HealthResult


@dataclass
class SiteRun:
    """What is known about one site while it converges, so an error at any point can still be
    recorded with the facts and rollout of the moment and the steps already done."""

    site: SiteDeclaration
    decl_commit: str | None
    facts: dict[str, SiteFacts] = field(default_factory=dict)
    rollout: Rollout | None = None
    applied: list[Applied] = field(default_factory=list)
    board: Board = field(default_factory=dict)
    snapshot: Snapshot | None = None
    checked: Mapping[str, HealthResult] = field(default_factory=dict)  # the live release's health, this poll

    @property
    def where(self) -> str:
        return label(self.site)

    @property
    def many(self) -> bool:
        return len(self.site.targets) > 1

    def on(self, server: str, text: str) -> str:
        """A server's own words, prefixed with its name when the site has more than one."""
        return f"{server}: {text}" if self.many else text

    def outcome(self, sync: Sync, health: Health, message: str = "", **more: Any) -> SiteOutcome:
        reached = self.rollout.head_reached if self.rollout is not None else None
        more.setdefault("repository_reached", reached)
        return SiteOutcome(self.site.domain, self.where, sync, health, message, self.applied, **more)

    def health(self) -> Health:
        return health_of(next(iter(self.facts.values()))) if self.facts else Health.UNKNOWN
