"""A Reconciler of its own for one command that acts on the servers or the declarations:
opened on the state database, its connections and the database closed afterwards."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from reconciler.cli.invocation import Invocation
from reconciler.cli.state import store
from reconciler.engine.converge import Reconciler

T = TypeVar("T")


@contextlib.asynccontextmanager
async def acting(invocation: Invocation) -> AsyncIterator[Reconciler]:
    reconciler = Reconciler(invocation.settings, store(invocation))
    try:
        yield reconciler
    finally:
        await reconciler.close()
        reconciler.store.close()


def act(invocation: Invocation, work: Callable[[Reconciler], Awaitable[T]]) -> T:
    """Run one operator action (`engine.actions`) to its end."""

    async def run() -> T:
        async with acting(invocation) as reconciler:
            return await work(reconciler)

    return asyncio.run(run())
