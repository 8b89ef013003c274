"""engine/heap.py: parsed declarations leave the cyclic collector's view until the next commit,
and the collection that does it never runs on a pin's critical path."""

from __future__ import annotations

import asyncio
import gc

from reconciler.engine import heap


def test_settle_freezes_what_is_alive_and_the_next_settle_collects_the_old_cycles() -> None:
    gc.unfreeze()
    try:
        cycle: list[object] = []
        cycle.append(cycle)
        heap.settle()
        assert gc.get_freeze_count() > 0
        del cycle  # garbage now, but frozen: the next commit's settle unfreezes and collects it
        frozen = gc.get_freeze_count()
        heap.settle()
        assert gc.get_freeze_count() < frozen
    finally:
        gc.unfreeze()


def test_settle_soon_waits_for_the_loop_and_does_nothing_without_one() -> None:
    gc.unfreeze()
    try:
        heap.settle_soon()  # no running loop: a one-off CLI pass has no long-lived heap
        assert gc.get_freeze_count() == 0

        async def go() -> tuple[int, int]:
            heap.settle_soon()
            now = gc.get_freeze_count()
            await asyncio.sleep(heap.SETTLE_AFTER + 0.2)
            return now, gc.get_freeze_count()

        at_once, later = asyncio.run(go())
        assert at_once == 0 and later > 0
    finally:
        gc.unfreeze()
