"""The cyclic garbage collector and the long-lived heap of a fleet's declarations.

Parsed declarations are tens of thousands of objects that live until the next declarations
commit, and the cyclic collector walks every one of them at each full collection: about 35 ms in
every other no-op pass at 2,000 sites, the largest item left of a pass's CPU after the probe.
Once a commit is parsed, `settle` collects once and moves everything alive out of the collector's
view (`gc.freeze`). The next commit unfreezes first, so whatever the old one left behind in
cycles is collected then: frozen objects are not leaked, only left alone while they are in use.
"""

from __future__ import annotations

import asyncio
import gc

SETTLE_AFTER = 1.0  # seconds: the full collection waits until the commit's first round is under way


def settle() -> None:
    """A new long-lived heap (a declarations commit was parsed): collect, then freeze it."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def settle_soon() -> None:
    """`settle`, but not now: the collection costs tens of milliseconds (more with a big fleet),
    and a pin that just landed should not wait for it. Without a running event loop (a one-off
    CLI pass) there is no long-lived heap to settle."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    loop.call_later(SETTLE_AFTER, settle)
