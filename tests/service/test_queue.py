"""service.queue.SiteQueue: the daemon's scheduling state as named transitions. Pure."""

from __future__ import annotations

from reconciler.service.queue import SiteQueue

SITES = frozenset({"a.example.com", "b.example.com", "c.example.com"})


def test_first_take_is_a_full_pass_then_only_requests() -> None:
    q = SiteQueue()
    assert q.take_ready(SITES, now=0.0) == set(SITES)
    q.done(SITES)
    assert not q.pending
    q.request({"b.example.com"})
    assert q.take_ready(SITES, now=1.0) == {"b.example.com"}


def test_one_worker_per_site() -> None:
    q = SiteQueue()
    q.take_ready(SITES, now=0.0)
    q.request({"a.example.com"})
    assert q.take_ready(SITES, now=1.0) == set()      # still busy: waits, is not lost
    assert q.pending
    q.done({"a.example.com"})
    assert q.take_ready(SITES, now=2.0) == {"a.example.com"}


def test_undeclared_sites_are_forgotten() -> None:
    q = SiteQueue()
    q.take_ready(SITES, now=0.0)
    q.done(SITES)
    q.request({"gone.example.com"})
    assert q.take_ready(SITES, now=1.0) == set()
    assert not q.pending


def test_backoff_doubles_to_the_cap_and_recovery_resets_it() -> None:
    q = SiteQueue(backoff_cap=30.0)
    waits = [q.backoff("a.example.com", 5.0, now=0.0) for _ in range(5)]
    assert waits == [5.0, 10.0, 20.0, 30.0, 30.0]
    q.recovered("a.example.com")
    assert q.backoff("a.example.com", 5.0, now=0.0) == 5.0


def test_a_backing_off_site_waits_its_turn_while_others_go() -> None:
    q = SiteQueue()
    q.take_ready(SITES, now=0.0)
    q.done(SITES)
    q.backoff("a.example.com", 5.0, now=0.0)
    q.request(SITES)
    assert q.take_ready(SITES, now=1.0) == {"b.example.com", "c.example.com"}
    assert q.take_ready(SITES, now=4.9) == set()
    assert q.take_ready(SITES, now=5.0) == {"a.example.com"}


def test_hurried_sites_are_wanted_and_taken_once() -> None:
    q = SiteQueue()
    q.take_ready(SITES, now=0.0)
    q.done(SITES)
    q.hurry({"c.example.com"})
    assert q.take_ready(SITES, now=1.0) == {"c.example.com"}
    assert q.take_hurried({"c.example.com", "a.example.com"}) == {"c.example.com"}
    assert q.take_hurried({"c.example.com"}) == set()


def test_done_says_whether_a_site_was_requested_again_meanwhile() -> None:
    """The daemon frees each site as its outcome arrives and looks again only when needed: a
    site requested while busy wants a look, one merely backing off does not (its timer asks)."""
    q = SiteQueue()
    q.take_ready(SITES, now=0.0)
    q.backoff("c.example.com", 5.0, now=0.0)
    q.request({"c.example.com"})
    assert not q.done({"a.example.com"})
    q.request({"b.example.com"})
    assert q.done({"b.example.com"})
    q.request()
    assert q.done({"c.example.com"})   # a full pass is due


def test_a_site_an_operator_asks_for_goes_now_though_it_was_backing_off() -> None:
    q = SiteQueue(backoff_cap=300.0)
    q.take_ready(SITES, now=0.0)
    q.done(SITES)
    assert q.backoff("a.example.com", 160.0, now=0.0) == 160.0
    q.asked(["a.example.com"])
    assert q.take_ready(SITES, now=1.0) == {"a.example.com"}  # not at 160 s
    q.done(["a.example.com"])
    assert q.backoff("a.example.com", 5.0, now=1.0) == 300.0  # failing again still doubles (to the cap)

