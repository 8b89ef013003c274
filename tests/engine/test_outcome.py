"""Table-driven tests of engine.outcome.outcome_of: the one mapping from any exception raised
while working on a site to that site's outcome and retry policy. Pure: no I/O."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest

from reconciler.core.plan import Activate, Deploy
from reconciler.core.status import Health, Sync
from reconciler.engine.outcome import BACKOFF_START, LOCK_RETRY, Applied, SiteOutcome, outcome_of
from reconciler.errors import (
    LayoutConflict,
    PermanentError,
    SiteLocked,
    StepFailed,
    TemporaryError,
    TransportError,
)


@dataclass(frozen=True)
class Case:
    name: str
    exc: BaseException
    sync: Sync
    health: Health
    retry_after: float | None
    backoff: bool
    message_has: str


CASES = [
    Case("lock held elsewhere: short wait, keeps health", SiteLocked("a is locked by b", delay=2.0),
         Sync.PROGRESSING, Health.HEALTHY, 2.0, False, "locked by b"),
    Case("lock held, no delay given", SiteLocked("locked"), Sync.PROGRESSING, Health.HEALTHY, LOCK_RETRY, False,
         "locked"),
    Case("server unreachable: backoff", TransportError("web-1: cannot connect: refused"),
         Sync.UNKNOWN, Health.UNKNOWN, BACKOFF_START, True, "cannot connect"),
    Case("temporary with its own delay", TemporaryError("busy", delay=30.0),
         Sync.UNKNOWN, Health.UNKNOWN, 30.0, True, "busy"),
    Case("step failed: wait for a change", StepFailed("provision", 1, "out", "mkdir: File exists"),
         Sync.FAILED, Health.HEALTHY, None, False, "provision failed (exit 1): mkdir: File exists"),
    Case("layout conflict", LayoutConflict("/srv/a is not a symlink"),
         Sync.FAILED, Health.DEGRADED, None, False, "not a symlink"),
    Case("other permanent error", PermanentError("no"), Sync.FAILED, Health.HEALTHY, None, False, "no"),
    Case("a bug: Unknown with the text, retried", ValueError("invalid literal for int() with base 10: '²'"),
         Sync.UNKNOWN, Health.UNKNOWN, BACKOFF_START, True, "ValueError: invalid literal"),
    Case("deep recursion from a bomb", RecursionError("maximum recursion depth exceeded"),
         Sync.UNKNOWN, Health.UNKNOWN, BACKOFF_START, True, "RecursionError"),
    Case("overflow", OverflowError("int too large"), Sync.UNKNOWN, Health.UNKNOWN, BACKOFF_START, True,
         "OverflowError"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_outcome_of(case: Case) -> None:
    outcome = outcome_of(case.exc, "a.example.com", "web-1", Health.HEALTHY)
    assert (outcome.sync, outcome.health) == (case.sync, case.health)
    assert (outcome.retry_after, outcome.backoff) == (case.retry_after, case.backoff)
    assert case.message_has in outcome.message
    assert (outcome.domain, outcome.server) == ("a.example.com", "web-1")


def test_unexpected_error_is_logged_once_with_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="reconciler.engine.outcome")
    exc = KeyError("only-once-" + __name__)
    for _ in range(3):
        outcome_of(exc, "b.example.com", "local")
    records = [r for r in caplog.records if r.name == "reconciler.engine.outcome"]
    assert len(records) == 1
    assert records[0].exc_info is not None


def test_applied_actions_survive_the_error() -> None:
    done = [Applied(Activate("01012026-000000", "rollback"))]
    outcome = outcome_of(StepFailed("prune", 1), "c.example.com", "local", Health.HEALTHY, done)
    assert outcome.applied == done
    assert outcome.rolled_back


def test_typed_actions_decide_notifications() -> None:
    deploy = Deploy("01012026-000000", "a" * 40)
    synced = SiteOutcome("d.example.com", "local", Sync.SYNCED, Health.HEALTHY, applied=[Applied(deploy)])
    assert synced.deployed and not synced.rolled_back and not synced.superseded
    failed = SiteOutcome("d.example.com", "local", Sync.FAILED, Health.HEALTHY,
                         applied=[Applied(deploy, failed=True)])
    assert not failed.deployed
    assert failed.actions == ["deploy 01012026-000000 failed"]
    superseded = SiteOutcome("d.example.com", "local", Sync.OUT_OF_SYNC, Health.HEALTHY,
                             applied=[Applied(deploy, superseded=True, note="newer")])
    assert superseded.superseded and not superseded.deployed

