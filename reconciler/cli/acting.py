"""A Reconciler of its own for one command that acts on the servers or the declarations:
opened on the state database, its connections and the database closed afterwards; and what
follows an operator action: a pin or unpin made live (by a running daemon, woken, or here),
a retry or redeploy queued for the daemon."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from reconciler.cli import control
from reconciler.cli.invocation import Invocation
from reconciler.cli.passes import announce_now, build_now
from reconciler.cli.state import store
from reconciler.core.status import Health, Sync
from reconciler.core.text import printable
from reconciler.engine import actions
from reconciler.engine.converge import Reconciler
from reconciler.errors import NotApplicable
from reconciler.service.control import Wake, live_of

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


# A pin's switch, or an unpin's, waited for: long enough for an unpin that must build (the
# branch moved while the site was pinned), bounded so a script never hangs on a stuck daemon.
LIVE_WAIT = 300.0


async def until_live(reconciler: Reconciler, invocation: Invocation, domain: str, commit: str, started: float,
                     no_wait: bool) -> int:
    """After a pin or unpin commit: a running daemon is woken for the site (and, unless
    `no_wait`, waited for until its switch); without one the switch is made here, on the
    connection the check before the commit opened (`actions.apply_now`). Prints what is live
    and how long the command took; 0 when the site is Synced, else 1."""
    state_dir = invocation.settings.state_dir
    if no_wait:
        if await control.wake(state_dir, Wake((domain,), commit)) is not None:
            print(f"{domain}: queued; the daemon applies it now")
        return 0
    answer = await control.wake(state_dir, Wake((domain,), commit, LIVE_WAIT))
    if answer is None:
        try:
            outcome = await actions.apply_now(reconciler, domain)
        except NotApplicable as exc:
            print(printable(str(exc)))
            return 0
        await announce_now(invocation, reconciler, [outcome])  # as the daemon would have
        row = reconciler.store.site(domain)
        found, by = live_of(outcome, row["active_release"] if row is not None else None), "here"
    elif answer.outcome is None:
        print(f"reconciler: {domain}: not live after {LIVE_WAIT:.0f} s; the daemon is still at it "
              f"(reconciler status {domain})", file=sys.stderr)
        return 1
    else:
        found, by = answer.outcome, "by the daemon"
    for action in found.actions:
        print(printable(f"  {action}"))
    took = f"{time.monotonic() - started:.2f} s, applied {by}"
    if found.sync == Sync.SYNCED:
        note = f"; {found.health}: {found.message}" if found.health != Health.HEALTHY else ""
        print(printable(f"{domain}: live: {found.live or 'nothing'} ({took}){note}"))
        return 0
    print(printable(f"{domain}: {found.sync}/{found.health} - {found.message} ({took})"))
    return 1


def queued(invocation: Invocation, domain: str) -> str:
    """A retry or redeploy recorded with --no-wait: wake a running daemon for the site now
    (never left for its next poll). What to tell the operator."""
    if asyncio.run(control.wake(invocation.settings.state_dir, Wake((domain,)))) is not None:
        return "queued; the daemon builds it now"
    return f"queued; no daemon runs here: `reconciler reconcile --site {domain}` builds it"


def then_build(invocation: Invocation, args: argparse.Namespace, done: str, now: str) -> int:
    """After a retry or redeploy is recorded (`done` says what): with --no-wait, queued for the
    daemon (`queued`); else the site's pass runs here (`now` says what it does)."""
    if args.no_wait:
        print(f"{done}; {queued(invocation, args.domain)}")
        return 0
    print(f"{done}; {now}")
    return build_now(invocation, args)

