"""From outcomes to deliveries (reconciler.service.herald): what a round or a fetch causes goes
out once, however many processes (a daemon, CLI runs) see it, because the once-only memory is
the real state database shared by all of them; and a recovery is news once too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.config import NotifyEvent, NotifyTarget, Settings
from reconciler.core.plan import Deploy
from reconciler.core.status import Health, Sync
from reconciler.engine.outcome import Applied, SiteOutcome
from reconciler.engine.store import Store
from reconciler.service.herald import Herald
from reconciler.service.webhooks import Notifications
from tests.support.repos import site_declaration

SHOP = "shop.example.com"
SITE = site_declaration(domain=SHOP, server="web-1")
DOWN = SiteOutcome(SHOP, "web-1", Sync.UNKNOWN, Health.UNKNOWN, "web-1: cannot connect: refused", retry_after=5.0,
                   backoff=True, unreachable=("web-1",))
FINE = SiteOutcome(SHOP, "web-1", Sync.SYNCED, Health.HEALTHY)


class Recorder(Notifications):
    """Notifications that keep what they would deliver (webhooks.py delivers, and is tested so)."""

    def __init__(self, both: list[tuple[str, str | None]] | None = None) -> None:
        super().__init__([NotifyTarget(url="http://127.0.0.1:9/hook")])
        self.sent: list[tuple[str, str | None, dict[str, Any]]] = []
        self.both = both if both is not None else []  # every recorder's events, in order

    def emit(self, event: NotifyEvent, domain: str | None, **fields: Any) -> None:
        self.sent.append((str(event), domain, fields))
        self.both.append((str(event), domain))


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[Herald, Herald, Recorder, Recorder]]:
    """Two processes' heralds (say the daemon's and a CLI run's) on one state database."""
    settings = Settings(state_dir=tmp_path, repo=tmp_path / "decl")
    first, second = Store(tmp_path / "state.db"), Store(tmp_path / "state.db")
    both: list[tuple[str, str | None]] = []
    a, b = Recorder(both), Recorder(both)
    try:
        yield Herald(lambda: settings, first, a), Herald(lambda: settings, second, b), a, b
    finally:
        first.close()
        second.close()


def events(a: Recorder, b: Recorder) -> list[tuple[str, str | None]]:
    """What the two processes sent, in the order they sent it."""
    assert a.both is b.both
    return list(a.both)


def test_an_outage_seen_by_two_processes_is_one_unreachable_and_one_recovered(
        two: tuple[Herald, Herald, Recorder, Recorder]) -> None:
    daemon, cli, a, b = two
    for _ in range(3):
        daemon.site(SITE, DOWN)
        cli.site(SITE, DOWN)
    assert events(a, b) == [("unreachable", None)]
    assert a.sent[0][2]["server"] == "web-1" and "refused" in a.sent[0][2]["message"]
    cli.site(SITE, FINE)
    daemon.site(SITE, FINE)
    assert events(a, b) == [("unreachable", None), ("recovered", None)]
    assert b.sent[0][2]["server"] == "web-1"
    daemon.site(SITE, DOWN)  # a second outage is news again
    assert events(a, b)[-1] == ("unreachable", None) and len(events(a, b)) == 3


def test_failed_then_synced_is_one_failed_and_one_recovered(two: tuple[Herald, Herald, Recorder, Recorder]) -> None:
    daemon, cli, a, b = two
    failed = SiteOutcome(SHOP, "web-1", Sync.FAILED, Health.HEALTHY, "deploy script failed (exit 3)")
    daemon.site(SITE, failed)
    cli.site(SITE, failed)
    cli.site(SITE, DOWN)   # an outage in between: the failure is not forgotten ...
    daemon.site(SITE, failed)  # ... so the same failure after it is no news
    cli.site(SITE, FINE)
    daemon.site(SITE, FINE)
    assert events(a, b) == [("failed", SHOP), ("unreachable", None), ("recovered", None), ("recovered", SHOP)]
    recovered = b.sent[-1][2]
    assert recovered["sync"] == "Synced" and recovered["reason"] == "failed"


def test_the_declarations_repository_down_and_back_once(two: tuple[Herald, Herald, Recorder, Recorder]) -> None:
    daemon, cli, a, b = two
    daemon.declarations("declarations repository ssh://127.0.0.1/x unreachable: refused")
    cli.declarations("declarations repository ssh://127.0.0.1/x unreachable: refused")
    cli.declarations("")
    daemon.declarations("")
    assert events(a, b) == [("unreachable", None), ("recovered", None)]
    assert a.sent[0][2]["server"] is None


def test_a_deploy_seen_by_another_process_names_what_was_live_before(
        two: tuple[Herald, Herald, Recorder, Recorder]) -> None:
    """previous_release is the live release at the last look by any process."""
    daemon, cli, a, b = two
    daemon.store.update_site(SHOP, server="web-1", active_release="01012025-000000", active_commit="a" * 40)
    daemon.site(SITE, FINE)  # the daemon looks: this is live
    daemon.store.update_site(SHOP, active_release="02012025-000000", active_commit="b" * 40)
    deployed = SiteOutcome(SHOP, "web-1", Sync.SYNCED, Health.HEALTHY, applied=[Applied(Deploy("02012025-000000",
                                                                                             "b" * 40))])
    cli.site(SITE, deployed)
    daemon.site(SITE, deployed)  # the same deploy, told twice: one event
    assert events(a, b) == [("deployed", SHOP)]
    assert (b.sent[0][2]["previous_release"], b.sent[0][2]["release"]) == ("01012025-000000", "02012025-000000")


def test_without_targets_nothing_is_written(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, repo=tmp_path / "decl")
    store = Store(tmp_path / "state.db")
    try:
        herald = Herald(lambda: settings, store, Notifications([]))
        herald.site(SITE, DOWN)
        herald.declarations("refused")
        assert store.db.execute("select count(*) from notices").fetchone()[0] == 0
    finally:
        store.close()
