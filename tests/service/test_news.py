"""Which `[[notify]]` events a site's round causes (reconciler.service.news): a table of
outcomes and what the daemon knew, and the notices each gives: which events are sent, in which
order, with which once-only key, and which are forgotten. Pure: no daemon, no store."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from reconciler.config import NotifyEvent
from reconciler.core.plan import Activate, Deploy
from reconciler.core.reasons import SwitchReason
from reconciler.core.status import Health, Sync
from reconciler.engine.outcome import Applied, SiteOutcome
from reconciler.service.news import DECLARATIONS, Forget, Known, Notice, Send, declarations, needs_history, news

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
    """The site's own notices (a cause's, a server's, are `causes`)."""
    return [("forget", str(n.event)) if isinstance(n, Forget) else ("send", str(n.event), n.once_key)
            for n in notices if n.scope is None]


def own(notices: list[Notice]) -> list[Notice]:
    return [n for n in notices if n.scope is None]


def causes(notices: list[Notice]) -> list[tuple[str, str, str | None]]:
    return [("forget" if isinstance(n, Forget) else "send", str(n.event), n.scope)
            for n in notices if n.scope is not None]


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
        [("send", "failed", "the site path is a real directory")]),
    "failed and degraded at once": (
        outcome(Sync.FAILED, Health.DEGRADED, message="x"), LIVE_OLD_WANTS_BAD,
        [("send", "failed", f"{BAD_SHA}/{KEY}"), ("send", "degraded", "degraded")]),
    "a site that has no row yet": (
        outcome(Sync.FAILED, Health.UNKNOWN, message="unreachable"), {},
        [("send", "failed", "unreachable")]),
    "Unknown (an outage) forgets nothing: the failure and the degradation outlast it": (
        outcome(Sync.UNKNOWN, Health.UNKNOWN, message="web-1: cannot connect"), LIVE_NEW, []),
    "OutOfSync and Missing forget, but nothing recovered": (
        outcome(Sync.OUT_OF_SYNC, Health.MISSING), LIVE_NEW, [("forget", "failed"), ("forget", "degraded")]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_notices_of_a_round(case: str) -> None:
    the_outcome, row, expected = CASES[case]
    assert brief(news(the_outcome, Known("web-1", KEY, row))) == expected


def test_a_recovery_is_a_forget_that_carries_recovered() -> None:
    """Synced forgets `failed` with a `recovered` to send, Healthy forgets `degraded` with one; a
    forget while the site is not yet well (OutOfSync, Missing) carries none."""
    well = news(outcome(), Known("web-1", KEY, LIVE_NEW))
    forgets = {n.event: n.recovered for n in well if isinstance(n, Forget) and n.scope is None}
    assert forgets[NotifyEvent.FAILED] is not None and forgets[NotifyEvent.FAILED]["reason"] == "failed"
    assert forgets[NotifyEvent.DEGRADED] is not None and forgets[NotifyEvent.DEGRADED]["reason"] == "degraded"
    assert forgets[NotifyEvent.FAILED]["release"] == NEW and forgets[NotifyEvent.FAILED]["sync"] == "Synced"
    not_yet = news(outcome(Sync.OUT_OF_SYNC, Health.MISSING), Known("web-1", KEY, LIVE_NEW))
    assert all(n.recovered is None for n in not_yet if isinstance(n, Forget) and n.scope is None)


def test_an_unreachable_server_is_news_of_the_server_not_of_the_site() -> None:
    """A round that could not reach its server sends `unreachable` in the server's scope (keyed
    once per outage, no domain); a round that reached it forgets it with `recovered`."""
    down = SiteOutcome(SHOP, "web-1", Sync.UNKNOWN, Health.UNKNOWN, "web-1: cannot connect", retry_after=5.0,
                       backoff=True, unreachable=("web-1",))
    notices = news(down, Known("web-1", KEY, LIVE_NEW))
    assert causes(notices) == [("send", "unreachable", "server web-1")]
    sent = notices[0]
    assert isinstance(sent, Send) and sent.once_key == "down"
    assert sent.fields["server"] == "web-1" and sent.fields["message"] == "web-1: cannot connect"
    back = news(outcome(), Known("web-1", KEY, LIVE_NEW))
    assert causes(back) == [("forget", "unreachable", "server web-1")]
    assert isinstance(back[0], Forget) and back[0].recovered is not None and back[0].recovered["server"] == "web-1"


def test_a_site_on_many_servers_names_each_server_it_could_not_reach() -> None:
    """One server down of two: `unreachable` for it, the other one was reached (a forget)."""
    down = SiteOutcome(SHOP, "web-1", Sync.UNKNOWN, Health.UNKNOWN, "web-2 unreachable", retry_after=5.0,
                       backoff=True, unreachable=("web-2",))
    notices = news(down, Known("web-1", KEY, LIVE_NEW, servers=("web-1", "web-2")))
    assert causes(notices) == [("forget", "unreachable", "server web-1"), ("send", "unreachable", "server web-2")]


def test_another_temporary_error_says_nothing_of_the_server() -> None:
    """A temporary error that is no connection problem (a bug, say) neither reports the server
    down nor up."""
    other = SiteOutcome(SHOP, "web-1", Sync.UNKNOWN, Health.UNKNOWN, "KeyError: x", retry_after=5.0, backoff=True)
    assert causes(news(other, Known("web-1", KEY, LIVE_NEW))) == []


def test_an_app_repository_that_did_not_answer_is_news_of_the_repository() -> None:
    """A round whose ref lookup got no answer sends `unreachable` in the repository's scope (no
    domain, no server; one scope however a site spells the URL); a round that was answered
    forgets it with `recovered`; a round that did not ask says nothing of it."""
    down = SiteOutcome(SHOP, "web-1", Sync.UNKNOWN, Health.UNKNOWN, "cannot resolve branch 'main': refused",
                       repository_reached=False)
    notices = news(down, Known("web-1", KEY, LIVE_NEW, repository="git@git.example.com:acme/shop.git"))
    assert ("send", "unreachable", "repository git.example.com/acme/shop") in causes(notices)
    sent = notices[-1]
    assert isinstance(sent, Send) and sent.fields["repository"] == "git@git.example.com:acme/shop.git"
    assert sent.fields["server"] is None and "refused" in sent.fields["message"]
    spelt = Known("web-1", KEY, LIVE_NEW, repository="ssh://git@git.example.com:22/acme/shop")
    back = news(dataclasses.replace(outcome(), repository_reached=True), spelt)
    assert ("forget", "unreachable", "repository git.example.com/acme/shop") in causes(back)
    assert ("forget", "unreachable", "repository git.example.com/acme/shop") not in causes(news(outcome(), spelt))


def test_the_declarations_repository_down_and_back() -> None:
    """A failed fetch is `unreachable` in the declarations' scope; a fetch that succeeds forgets it
    with `recovered`. Neither names a domain or a server."""
    down = declarations("declarations repository ssh://git@127.0.0.1/x unreachable: refused")
    assert causes(down) == [("send", "unreachable", DECLARATIONS)]
    assert isinstance(down[0], Send) and down[0].fields["server"] is None and "refused" in down[0].fields["message"]
    up = declarations("")
    assert causes(up) == [("forget", "unreachable", DECLARATIONS)]
    assert isinstance(up[0], Forget) and up[0].recovered is not None


def test_the_history_is_needed_only_for_a_failure() -> None:
    """The daemon reads a site's deployments only when `news` will look at them."""
    assert needs_history(outcome(Sync.FAILED, Health.HEALTHY))
    assert not any(needs_history(outcome(sync, Health.DEGRADED)) for sync in Sync if sync != Sync.FAILED)


def test_deployed_names_the_live_release_and_the_one_before() -> None:
    live = {"id": 8, "release": NEW, "commit_sha": NEW_SHA, "commit_subject": "v2", "commit_author": "Jane",
            "duration_ms": 1200}
    known = Known("web-1", KEY, LIVE_NEW, live=live, previous=(OLD, OLD_SHA), endpoint="http://127.0.0.1:9180")
    sent = own(news(outcome(Sync.SYNCED, Health.HEALTHY, DEPLOY), known))[0]
    assert isinstance(sent, Send) and sent.event == NotifyEvent.DEPLOYED
    assert {k: sent.fields[k] for k in ("server", "release", "commit", "previous_release", "deployment_id")} == {
        "server": "web-1", "release": NEW, "commit": NEW_SHA, "previous_release": OLD, "deployment_id": 8}
    assert sent.fields["log_url"] == f"http://127.0.0.1:9180/api/sites/{SHOP}/deployments/8/log"


def test_failed_names_the_failed_build_not_the_live_release() -> None:
    history = [{"id": 9, "release": BAD, "commit_sha": BAD_SHA, "status": "failed", "build_key": KEY,
                "server": "web-2", "message": "exit 3"},
               {"id": 8, "release": OLD, "commit_sha": OLD_SHA, "status": "success", "build_key": KEY}]
    known = Known("web-1", KEY, LIVE_OLD_WANTS_BAD, history=history)
    sent = own(news(outcome(Sync.FAILED, Health.HEALTHY, FAILED_DEPLOY, message="build failed"), known))[0]
    assert isinstance(sent, Send) and sent.event == NotifyEvent.FAILED
    assert (sent.fields["release"], sent.fields["commit"], sent.fields["server"]) == (BAD, BAD_SHA, "web-2")
    assert (sent.fields["live_release"], sent.fields["live_commit"]) == (OLD, OLD_SHA)
    assert sent.fields["reason"] == "exit 3"  # the build's own message shapes the text


def test_failed_without_a_build_names_the_desired_commit() -> None:
    sent = own(news(outcome(Sync.FAILED, Health.UNKNOWN, message="real directory"),
                    Known("web-1", KEY, LIVE_OLD_WANTS_BAD)))[0]
    assert isinstance(sent, Send)
    assert (sent.fields["release"], sent.fields["commit"]) == (None, BAD_SHA)
