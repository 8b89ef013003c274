"""Which `[[notify]]` events a site's round causes (reconciler.service.news): a table of
outcomes and what the daemon knew, and the notices each gives: which events are sent, in which
order, with which once-only key, and which are forgotten. Pure: no daemon, no store."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.config import NotifyEvent
from reconciler.core.plan import Activate, Deploy
from reconciler.core.reasons import SwitchReason
from reconciler.core.status import Health, Sync
from reconciler.engine.outcome import Applied, SiteOutcome
from reconciler.service.news import Forget, Known, Notice, Send, needs_history, news

SHOP = "shop.example.com"
OLD, NEW, BAD = "31072025-143022", "01082025-091245", "02082025-101010"
OLD_SHA, NEW_SHA, BAD_SHA = "a" * 40, "b" * 40, "c" * 40
KEY = "k1"

DEPLOY = Applied(Deploy(NEW, NEW_SHA))
FAILED_DEPLOY = Applied(Deploy(BAD, BAD_SHA), failed=True)
SUPERSEDED = Applied(Deploy(NEW, NEW_SHA), superseded=True)
ROLLBACK = Applied(Activate(OLD, SwitchReason.ROLLBACK))
AUTO_ROLLBACK = Applied(Activate(OLD, SwitchReason.AUTO_ROLLBACK))
ROLL_FORWARD = Applied(Activate(NEW, SwitchReason.ROLL_FORWARD))

LIVE_NEW = {"active_release": NEW, "active_commit": NEW_SHA, "desired_commit": NEW_SHA}
LIVE_OLD_WANTS_BAD = {"active_release": OLD, "active_commit": OLD_SHA, "desired_commit": BAD_SHA}
NOTHING_WANTED = {"active_release": None, "active_commit": None, "desired_commit": None}


def outcome(sync: Sync = Sync.SYNCED, health: Health = Health.HEALTHY, *applied: Applied,
            message: str = "") -> SiteOutcome:
    return SiteOutcome(SHOP, "web-1", sync, health, message, list(applied))


def brief(notices: list[Notice]) -> list[tuple[str, str] | tuple[str, str, str]]:
    return [("forget", str(n.event)) if isinstance(n, Forget) else ("send", str(n.event), n.once_key)
            for n in notices]


CASES: dict[str, tuple[SiteOutcome, dict[str, Any], list[Any]]] = {
    "nothing happened: every state event is news again": (
        outcome(), LIVE_NEW, [("forget", "failed"), ("forget", "degraded")]),
    "a deploy: once per live commit": (
        outcome(Sync.SYNCED, Health.HEALTHY, DEPLOY), LIVE_NEW,
        [("send", "deployed", NEW_SHA), ("forget", "failed"), ("forget", "degraded")]),
    "a deploy that failed its health check is deployed and degraded": (
        outcome(Sync.SYNCED, Health.DEGRADED, DEPLOY), LIVE_NEW,
        [("send", "deployed", NEW_SHA), ("forget", "failed"), ("send", "degraded", "degraded")]),
    "a build superseded by a newer declaration is no deploy": (
        outcome(Sync.SYNCED, Health.HEALTHY, SUPERSEDED), LIVE_NEW, [("forget", "failed"), ("forget", "degraded")]),
    "a deploy while not Synced (a reload failed) is not news of a deploy": (
        outcome(Sync.OUT_OF_SYNC, Health.HEALTHY, DEPLOY), LIVE_NEW, [("forget", "failed"), ("forget", "degraded")]),
    "an operator's rollback: every time, no key": (
        outcome(Sync.SYNCED, Health.HEALTHY, ROLLBACK), LIVE_NEW,
        [("send", "rolled_back", ""), ("forget", "failed"), ("forget", "degraded")]),
    "an automatic rollback after a failed deploy": (
        outcome(Sync.FAILED, Health.HEALTHY, FAILED_DEPLOY, AUTO_ROLLBACK), LIVE_OLD_WANTS_BAD,
        [("send", "rolled_back", ""), ("send", "failed", f"{BAD_SHA}/{KEY}"), ("forget", "degraded")]),
    "a roll-forward is no rollback": (
        outcome(Sync.SYNCED, Health.HEALTHY, ROLL_FORWARD), LIVE_NEW, [("forget", "failed"), ("forget", "degraded")]),
    "failed: keyed like the failure memory (desired commit, build key)": (
        outcome(Sync.FAILED, Health.HEALTHY, FAILED_DEPLOY, message="build failed"), LIVE_OLD_WANTS_BAD,
        [("send", "failed", f"{BAD_SHA}/{KEY}"), ("forget", "degraded")]),
    "failed with no commit desired: keyed by the message": (
        outcome(Sync.FAILED, Health.UNKNOWN, message="the site path is a real directory"), NOTHING_WANTED,
        [("send", "failed", "the site path is a real directory"), ("forget", "degraded")]),
    "failed and degraded at once": (
        outcome(Sync.FAILED, Health.DEGRADED, message="x"), LIVE_OLD_WANTS_BAD,
        [("send", "failed", f"{BAD_SHA}/{KEY}"), ("send", "degraded", "degraded")]),
    "a site that has no row yet": (
        outcome(Sync.FAILED, Health.UNKNOWN, message="unreachable"), {},
        [("send", "failed", "unreachable"), ("forget", "degraded")]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_notices_of_a_round(case: str) -> None:
    the_outcome, row, expected = CASES[case]
    assert brief(news(the_outcome, Known("web-1", KEY, row))) == expected


def test_the_history_is_needed_only_for_a_failure() -> None:
    """The daemon reads a site's deployments only when `news` will look at them."""
    assert needs_history(outcome(Sync.FAILED, Health.HEALTHY))
    assert not any(needs_history(outcome(sync, Health.DEGRADED)) for sync in Sync if sync != Sync.FAILED)


def test_deployed_names_the_live_release_and_the_one_before() -> None:
    live = {"id": 8, "release": NEW, "commit_sha": NEW_SHA, "commit_subject": "v2", "commit_author": "Jane",
            "duration_ms": 1200}
    known = Known("web-1", KEY, LIVE_NEW, live=live, previous=(OLD, OLD_SHA), endpoint="http://127.0.0.1:9180")
    sent = news(outcome(Sync.SYNCED, Health.HEALTHY, DEPLOY), known)[0]
    assert isinstance(sent, Send) and sent.event == NotifyEvent.DEPLOYED
    assert {k: sent.fields[k] for k in ("server", "release", "commit", "previous_release", "deployment_id")} == {
        "server": "web-1", "release": NEW, "commit": NEW_SHA, "previous_release": OLD, "deployment_id": 8}
    assert sent.fields["log_url"] == f"http://127.0.0.1:9180/api/sites/{SHOP}/deployments/8/log"


def test_failed_names_the_failed_build_not_the_live_release() -> None:
    history = [{"id": 9, "release": BAD, "commit_sha": BAD_SHA, "status": "failed", "build_key": KEY,
                "server": "web-2", "message": "exit 3"},
               {"id": 8, "release": OLD, "commit_sha": OLD_SHA, "status": "success", "build_key": KEY}]
    known = Known("web-1", KEY, LIVE_OLD_WANTS_BAD, history=history)
    sent = news(outcome(Sync.FAILED, Health.HEALTHY, FAILED_DEPLOY, message="build failed"), known)[0]
    assert isinstance(sent, Send) and sent.event == NotifyEvent.FAILED
    assert (sent.fields["release"], sent.fields["commit"], sent.fields["server"]) == (BAD, BAD_SHA, "web-2")
    assert (sent.fields["live_release"], sent.fields["live_commit"]) == (OLD, OLD_SHA)
    assert sent.fields["reason"] == "exit 3"  # the build's own message shapes the text


def test_failed_without_a_build_names_the_desired_commit() -> None:
    sent = news(outcome(Sync.FAILED, Health.UNKNOWN, message="real directory"), Known("web-1", KEY,
                                                                                        LIVE_OLD_WANTS_BAD))[0]
    assert isinstance(sent, Send)
    assert (sent.fields["release"], sent.fields["commit"]) == (None, BAD_SHA)
