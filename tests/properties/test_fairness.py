"""engine.fairness.FairLimiter under random acquire / release / cancel / reconfigure sequences:
never more than `concurrency` granted, never more than a key's cap, no slot leaked by a
cancellation, FIFO within a key, and no waiter left waiting while a slot it may take is free."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from reconciler.engine.fairness import FairLimiter
from tests.properties.strategies import FAST

KEYS = ("a", "b", "c")

caps = st.fixed_dictionaries({key: st.none() | st.integers(1, 3) for key in KEYS})
ops = st.lists(st.one_of(
    st.tuples(st.just("acquire"), st.sampled_from(KEYS)),
    st.tuples(st.just("release"), st.integers(0, 30)),
    st.tuples(st.just("cancel"), st.integers(0, 30)),
    # A release, then a cancellation before anything runs: often of the waiter just granted.
    st.tuples(st.just("release+cancel"), st.integers(0, 30), st.integers(0, 30)),
    st.tuples(st.just("reconfigure"), st.integers(1, 4)),
), max_size=60)


@dataclass
class Model:
    limiter: FairLimiter[str]
    caps: dict[str, int | None]
    order: list[tuple[str, int]] = field(default_factory=list)     # every acquire: (key, n)
    tasks: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    holding: list[tuple[str, int]] = field(default_factory=list)   # granted, not released
    granted: dict[str, list[int]] = field(default_factory=dict)    # per key, in grant order

    def acquire(self, key: str) -> None:
        n = len(self.order)
        self.order.append((key, n))

        async def take() -> None:
            await self.limiter.acquire(key)
            self.holding.append((key, n))
            self.granted.setdefault(key, []).append(n)

        self.tasks[n] = asyncio.create_task(take())

    def release(self, pick: int) -> None:
        if self.holding:
            key, _ = self.holding.pop(pick % len(self.holding))
            self.limiter.release(key)

    def cancel(self, pick: int) -> None:
        waiting = [task for task in self.tasks.values() if not task.done()]
        if waiting:
            waiting[pick % len(waiting)].cancel()

    def waiting_keys(self) -> set[str]:
        return {key for key, n in self.order if not self.tasks[n].done()}

    def check(self, before: int) -> None:
        limiter = self.limiter
        held = limiter.held
        # No leak, no phantom: the limiter holds exactly what the tasks were granted.
        assert held == len(self.holding)
        for key in KEYS:
            mine = sum(1 for k, _ in self.holding if k == key)
            assert limiter.held_by(key) == mine
            cap = self.caps[key]
            assert cap is None or mine <= cap, (key, mine, cap)
        # A grant never takes the total above the limit (after a lowering, held may stay above
        # it until enough are released, but never grows there).
        assert held <= before or held <= limiter.concurrency, (before, held, limiter.concurrency)
        # Nobody waits while a slot it may take is free.
        if held < limiter.concurrency:
            for key in self.waiting_keys():
                cap = self.caps[key]
                assert cap is not None and limiter.held_by(key) >= cap, (key, held, limiter.concurrency)
        # First come, first served within a key.
        for numbers in self.granted.values():
            assert numbers == sorted(numbers)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@FAST
@given(st.integers(1, 4), caps, ops)
def test_random_sequences_keep_every_promise(concurrency: int, key_caps: dict[str, int | None],
                                             steps: list[tuple[str | int, ...]]) -> None:
    async def go() -> None:
        model = Model(FairLimiter(concurrency, key_caps.__getitem__), key_caps)
        for kind, *args in steps:
            before = model.limiter.held
            if kind == "acquire":
                model.acquire(str(args[0]))
            elif kind == "release":
                model.release(int(args[0]))
            elif kind == "cancel":
                model.cancel(int(args[0]))
            elif kind == "release+cancel":
                model.release(int(args[0]))
                model.cancel(int(args[1]))
            else:
                model.limiter.reconfigure(int(args[0]))
            await settle()
            model.check(before)
        # Liveness: releasing everything lets every waiter through, and nothing stays held.
        while model.holding:
            before = model.limiter.held
            model.release(0)
            await settle()
            model.check(before)
        assert all(task.done() for task in model.tasks.values())
        assert (model.limiter.held, model.limiter.waiting()) == (0, 0)

    asyncio.run(go())
