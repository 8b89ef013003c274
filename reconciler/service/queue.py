"""The daemon's per-site work queue: which sites want a round, which are in one, which are
backing off, and which just had their declaration changed.

One worker per site at a time (`busy`), a full pass on request, and exponential backoff per
site. Pure bookkeeping: the caller passes `now` (the event loop's clock) and does the I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Set

BACKOFF_CAP = 300.0


class SiteQueue:
    """Named transitions over the sites' scheduling state; every invariant lives here."""

    def __init__(self, backoff_cap: float = BACKOFF_CAP) -> None:
        self._wanted: set[str] = set()
        self._everyone = True          # a full pass is due: every declared site is wanted
        self._busy: set[str] = set()   # in a round right now
        self._hurry: set[str] = set()  # declaration just changed (a pin: skip the probe)
        self._delay: dict[str, float] = {}
        self._not_before: dict[str, float] = {}
        self._cap = backoff_cap

    def request(self, domains: Iterable[str] | None = None) -> None:
        """Ask for a round of `domains`, or of every declared site when None."""
        if domains is None:
            self._everyone = True
        else:
            self._wanted.update(domains)

    def hurry(self, domains: Iterable[str]) -> None:
        """These sites' declarations just changed: want them, and let a pin skip the probe."""
        domains = set(domains)
        self._hurry |= domains
        self._wanted |= domains

    def take_hurried(self, domains: Set[str]) -> set[str]:
        taken = self._hurry & domains
        self._hurry -= taken
        return taken

    def take_ready(self, declared: Set[str], now: float) -> set[str]:
        """The wanted sites that may start now (not busy, not backing off); they become busy.
        Sites no longer declared are forgotten."""
        if self._everyone:
            self._everyone = False
            self._wanted |= declared
        self._wanted &= declared
        ready = {d for d in self._wanted if d not in self._busy and self._not_before.get(d, 0.0) <= now}
        self._wanted -= ready
        self._busy |= ready
        return ready

    def done(self, domains: Iterable[str]) -> bool:
        """These sites' rounds ended. True when one of them was requested again meanwhile: the
        dispatcher should look (sites only backing off need no look: their timer requests them)."""
        domains = set(domains)
        self._busy -= domains
        return self._everyone or not self._wanted.isdisjoint(domains)

    @property
    def pending(self) -> bool:
        """Sites are waiting (for a worker or their backoff): the dispatcher should look again."""
        return bool(self._wanted) or self._everyone

    def backoff(self, domain: str, first: float, now: float) -> float:
        """A temporary error: the site waits `first` seconds, then twice as long as last time,
        up to the cap. Returns the wait; the caller requests the site again after it."""
        previous = self._delay.get(domain)
        delay = min(self._cap, max(first, previous * 2 if previous else first))
        self._delay[domain] = delay
        self._not_before[domain] = now + delay
        return delay

    def asked(self, domains: Iterable[str]) -> None:
        """An operator asked for these sites (the command line, the API, the dashboard): they go now,
        not after their backoff; a further temporary error still doubles the wait."""
        for domain in domains:
            self._not_before.pop(domain, None)
        self.request(domains)

    def recovered(self, domain: str) -> None:
        """The site got a definite outcome: its next temporary error starts the backoff afresh."""
        self._delay.pop(domain, None)
        self._not_before.pop(domain, None)
