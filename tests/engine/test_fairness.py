"""engine.fairness.FairLimiter: the global limit shared fairly between servers. Pure asyncio:
tasks acquire, the test releases, and `settle()` lets every runnable task run (no timing)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from reconciler.engine.fairness import FairLimiter


async def settle() -> None:
    """Let every task that can run, run (a grant wakes its task on the next loop iteration)."""
    for _ in range(5):
        await asyncio.sleep(0)


class Waiters:
    """Tasks that each take one slot of `limiter` and then hold it: `granted` lists them in the
    order they got it. The test releases slots itself."""

    def __init__(self, limiter: FairLimiter[str]) -> None:
        self.limiter = limiter
        self.granted: list[str] = []
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def want(self, *names: str) -> None:
        """Start a waiter per name; its key is the name's first letter ("a1" -> "a")."""
        for name in names:
            self.tasks[name] = asyncio.create_task(self._take(name))

    async def _take(self, name: str) -> None:
        await self.limiter.acquire(name[0])
        self.granted.append(name)

    def release(self, name: str) -> None:
        assert name in self.granted
        self.limiter.release(name[0])


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


def test_fifo_within_a_key() -> None:
    async def go() -> None:
        w = Waiters(FairLimiter(1))
        w.want("a1", "a2", "a3", "a4")
        await settle()
        assert w.granted == ["a1"]
        for name in ("a1", "a2", "a3"):
            w.release(name)
            await settle()
        assert w.granted == ["a1", "a2", "a3", "a4"]

    run(go)


def test_round_robin_across_keys() -> None:
    """Nine sites of three servers queued server by server: they are served in turns. A FIFO
    semaphore would serve a1 a2 a3 b1 b2 b3 c1 c2 c3."""

    async def go() -> None:
        w = Waiters(FairLimiter(1))
        w.want("x")
        await settle()
        w.want("a1", "a2", "a3", "b1", "b2", "b3", "c1", "c2", "c3")
        await settle()
        w.release("x")
        for _ in range(9):
            await settle()
            w.release(w.granted[-1])
        assert w.granted[1:] == ["a1", "b1", "c1", "a2", "b2", "c2", "a3", "b3", "c3"]

    run(go)


def test_a_free_slot_goes_to_the_key_holding_fewest() -> None:
    """a holds both slots; a3 waits before b1. When one of a's slots frees, b (holding none)
    gets it, not a3: the first server to answer does not keep every slot."""

    async def go() -> None:
        w = Waiters(FairLimiter(2))
        w.want("a1", "a2", "a3", "b1", "b2")
        await settle()
        assert w.granted == ["a1", "a2"]
        w.release("a1")
        await settle()
        assert w.granted[-1] == "b1"
        w.release("a2")   # a: 0 held, b: 1 held
        await settle()
        assert w.granted[-1] == "a3"

    run(go)


def test_a_key_never_holds_more_than_its_cap() -> None:
    async def go() -> None:
        limiter: FairLimiter[str] = FairLimiter(10, lambda key: 2 if key == "a" else None)
        w = Waiters(limiter)
        w.want("a1", "a2", "a3", "a4", "b1", "b2", "b3")
        await settle()
        assert sorted(w.granted) == ["a1", "a2", "b1", "b2", "b3"]   # b has no cap of its own
        assert (limiter.held_by("a"), limiter.waiting("a"), limiter.held) == (2, 2, 5)
        w.release("b1")
        await settle()
        assert limiter.held == 4   # a free slot, but a is at its cap: a3 keeps waiting
        w.release("a1")
        await settle()
        assert w.granted[-1] == "a3"

    run(go)


def test_never_more_than_concurrency_in_all() -> None:
    async def go() -> None:
        limiter: FairLimiter[str] = FairLimiter(2, lambda key: 5)
        w = Waiters(limiter)
        w.want("a1", "b1", "c1", "d1")
        await settle()
        assert (len(w.granted), limiter.held, limiter.waiting()) == (2, 2, 2)

    run(go)


def test_a_waiter_cancelled_while_waiting_takes_nothing() -> None:
    async def go() -> None:
        limiter: FairLimiter[str] = FairLimiter(1)
        w = Waiters(limiter)
        w.want("a1", "b1", "c1")
        await settle()
        w.tasks["b1"].cancel()
        await settle()
        assert limiter.waiting() == 1
        w.release("a1")
        await settle()
        assert w.granted == ["a1", "c1"]
        w.release("c1")
        assert (limiter.held, limiter.waiting()) == (0, 0)

    run(go)


def test_a_waiter_cancelled_right_after_its_grant_gives_the_slot_back() -> None:
    """The release grants b1's future, but b1's task is cancelled before it runs: the slot must
    go on to c1 (asyncio.Semaphore has the same duty), not leak."""

    async def go() -> None:
        limiter: FairLimiter[str] = FairLimiter(1)
        w = Waiters(limiter)
        w.want("a1", "b1", "c1")
        await settle()
        w.release("a1")
        assert limiter.held_by("b") == 1   # granted, its task not yet resumed
        w.tasks["b1"].cancel()
        await settle()
        assert w.tasks["b1"].cancelled()
        assert w.granted == ["a1", "c1"]
        assert (limiter.held, limiter.held_by("b")) == (1, 0)
        w.release("c1")
        assert limiter.held == 0

    run(go)


def test_cancelled_while_others_of_its_key_wait_keeps_their_order() -> None:
    async def go() -> None:
        w = Waiters(FairLimiter(1))
        w.want("a1", "a2", "a3", "a4")
        await settle()
        w.tasks["a3"].cancel()
        await settle()
        w.release("a1")
        await settle()
        w.release("a2")
        await settle()
        assert w.granted == ["a1", "a2", "a4"]

    run(go)


def test_reconfigure_grants_at_once_when_raised_and_drains_when_lowered() -> None:
    async def go() -> None:
        limiter: FairLimiter[str] = FairLimiter(1)
        w = Waiters(limiter)
        w.want("a1", "b1", "c1", "d1", "e1")
        await settle()
        limiter.reconfigure(3)
        await settle()
        assert w.granted == ["a1", "b1", "c1"]
        limiter.reconfigure(1)
        for name in ("a1", "b1"):
            w.release(name)
            await settle()
            assert len(w.granted) == 3   # still 1 or more held: nothing new under the new limit
        w.release("c1")
        await settle()
        assert w.granted == ["a1", "b1", "c1", "d1"]

    run(go)


def test_reconfigure_asks_the_caps_again() -> None:
    async def go() -> None:
        limiter: FairLimiter[str] = FairLimiter(10, lambda key: 1)
        w = Waiters(limiter)
        w.want("a1", "a2", "a3")
        await settle()
        assert w.granted == ["a1"]
        limiter.reconfigure(10, lambda key: 3)
        await settle()
        assert w.granted == ["a1", "a2", "a3"]

    run(go)


def test_slot_is_released_when_the_block_raises() -> None:
    async def go() -> None:
        limiter: FairLimiter[str] = FairLimiter(1)
        with pytest.raises(KeyError):
            async with limiter.slot("a"):
                assert limiter.held == 1
                raise KeyError("boom")
        assert limiter.held == 0

    run(go)


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="concurrency must be at least 1"):
        FairLimiter(0)
    limiter: FairLimiter[str] = FairLimiter(2, lambda key: 0)
    with pytest.raises(ValueError, match="the cap of 'a' must be at least 1"):
        asyncio.run(limiter.acquire("a"))
    assert limiter.held == 0
    with pytest.raises(RuntimeError, match="holds no slot"):
        FairLimiter[str](1).release("a")

