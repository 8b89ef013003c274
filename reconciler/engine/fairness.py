"""Fair dispatch of the global concurrency limit across servers.

`asyncio.Semaphore` wakes its waiters in arrival order. A pass probes every server at once and
each server queues all of its sites when its probe answers, so the first server to answer took
every slot until all its sites were done, while its SSH connection let only a few of them run at
a time (`MAX_SESSIONS`): slots sat waiting on one server's session cap while other servers idled.

`FairLimiter` grants `concurrency` slots in all, and when several keys (servers) have waiters,
the next free slot goes to the key holding the fewest slots, ties broken by the key served
least recently: a round robin that also counts what each key already holds. Within a key it is
first come, first served. A key never holds more than its cap, so a slot is never spent waiting
on that server's session semaphore. Pure asyncio bookkeeping, no I/O.

Cancellation never leaks a slot: a waiter cancelled while it waits leaves the queue, and one
cancelled just after it was granted (before it ran) gives the slot back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Hashable
from types import TracebackType
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


def _no_cap(key: object) -> int | None:
    return None


class FairLimiter(Generic[K]):
    """At most `concurrency` slots held at once, at most `per_key(key)` by one key (None: no cap
    of its own), granted fairly across keys (see the module docstring)."""

    def __init__(self, concurrency: int, per_key: Callable[[K], int | None] = _no_cap) -> None:
        self._concurrency = _at_least_one("concurrency", concurrency)
        self._per_key = per_key
        self._caps: dict[K, int | None] = {}    # per_key's answers: asked once per key
        self._held: dict[K, int] = {}           # keys holding slots (none at 0)
        self._total = 0
        # Keys with waiters, oldest waiting key first: the tie-break after `_served`.
        self._queues: dict[K, deque[asyncio.Future[None]]] = {}
        # When each key was last granted a slot (a counter). Kept for idle keys too: a key that
        # comes back must not count as never served and jump the keys that kept waiting.
        self._served: dict[K, int] = {}
        self._grants = 0

    # -- what it holds -----------------------------------------------------------------------

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def held(self) -> int:
        """Slots held now (granted and not yet released)."""
        return self._total

    def held_by(self, key: K) -> int:
        return self._held.get(key, 0)

    def waiting(self, key: K | None = None) -> int:
        """Waiters not yet granted: of `key`, or of every key."""
        if key is not None:
            return sum(1 for f in self._queues.get(key, ()) if not f.done())
        return sum(1 for q in self._queues.values() for f in q if not f.done())

    def cap(self, key: K) -> int | None:
        """The most slots `key` may hold at once (None: only the total limits it)."""
        if key not in self._caps:
            cap = self._per_key(key)
            self._caps[key] = None if cap is None else _at_least_one(f"the cap of {key!r}", cap)
        return self._caps[key]

    # -- acquire / release -------------------------------------------------------------------

    def slot(self, key: K) -> _Slot[K]:
        """`async with limiter.slot(server): ...` holds one slot for `server` in the block."""
        return _Slot(self, key)

    async def acquire(self, key: K) -> None:
        if key not in self._queues and self._may_take(key):
            # Nobody of this key waits before us and the slot is free: nobody else can want it
            # (after every change `_grant` leaves no waiter that could take a free slot).
            self._take(key)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(key, deque()).append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(key)  # granted, then cancelled before it ran: the slot goes back
            else:
                self._forget(key, future)
            raise

    def release(self, key: K) -> None:
        held = self._held.get(key, 0)
        if held <= 0:
            raise RuntimeError(f"release of {key!r}, which holds no slot")
        if held == 1:
            del self._held[key]
        else:
            self._held[key] = held - 1
        self._total -= 1
        self._grant()

    def reconfigure(self, concurrency: int, per_key: Callable[[K], int | None] | None = None) -> None:
        """New limits (SIGHUP). Slots held stay held; a lower limit grants nothing new until
        enough are released, a higher one grants at once."""
        self._concurrency = _at_least_one("concurrency", concurrency)
        if per_key is not None:
            self._per_key = per_key
        self._caps.clear()
        self._grant()

    # -- inside ------------------------------------------------------------------------------

    def _may_take(self, key: K) -> bool:
        cap = self.cap(key)
        return self._total < self._concurrency and (cap is None or self._held.get(key, 0) < cap)

    def _take(self, key: K) -> None:
        self._held[key] = self._held.get(key, 0) + 1
        self._total += 1
        self._grants += 1
        self._served[key] = self._grants

    def _grant(self) -> None:
        """Hand free slots to waiters: each to the eligible key holding fewest, then served least
        recently, then waiting longest. O(keys waiting) per grant: keys are servers, few."""
        while self._total < self._concurrency and self._queues:
            best: K | None = None
            rank: tuple[int, int] | None = None
            for key in list(self._queues):
                queue = self._queues[key]
                while queue and queue[0].done():
                    queue.popleft()  # cancelled while waiting; its task has not run its handler yet
                if not queue:
                    del self._queues[key]
                    continue
                if not self._may_take(key):
                    continue
                mine = (self._held.get(key, 0), self._served.get(key, 0))
                if rank is None or mine < rank:
                    best, rank = key, mine
            if best is None:
                return  # every key with waiters is at its cap
            queue = self._queues[best]
            future = queue.popleft()
            if not queue:
                del self._queues[best]
            self._take(best)
            future.set_result(None)

    def _forget(self, key: K, future: asyncio.Future[None]) -> None:
        queue = self._queues.get(key)
        if queue is None:
            return
        with contextlib.suppress(ValueError):  # already dropped by `_grant`
            queue.remove(future)
        if not queue:
            del self._queues[key]


class _Slot(Generic[K]):
    """One slot for the duration of an `async with` block (a class, not a generator-based
    context manager: it is entered once per site per pass)."""

    __slots__ = ("_key", "_limiter")

    def __init__(self, limiter: FairLimiter[K], key: K) -> None:
        self._limiter = limiter
        self._key = key

    async def __aenter__(self) -> None:
        await self._limiter.acquire(self._key)

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._limiter.release(self._key)


def _at_least_one(what: str, value: int) -> int:
    if value < 1:
        raise ValueError(f"{what} must be at least 1, not {value}")
    return value
