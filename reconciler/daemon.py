"""`reconciler run`: reconcile continuously. (A plain polling loop for now; the watch,
scheduler, worker and systemd parts are the daemon issue's.)"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from .config import Settings
from .converge import Reconciler
from .errors import ReconcilerError
from .store import Store


async def _loop(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reconciler = Reconciler(settings, Store(settings.db_path))
    try:
        while not stop.is_set():
            try:
                outcomes = await reconciler.run_pass()
                synced = sum(o.sync == "Synced" for o in outcomes)
                print(f"pass: {synced}/{len(outcomes)} synced", file=sys.stderr, flush=True)
            except ReconcilerError as exc:
                print(f"pass failed: {exc}", file=sys.stderr, flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.interval)
    finally:
        await reconciler.close()
        reconciler.store.close()


def run_daemon(settings: Settings) -> int:
    asyncio.run(_loop(settings))
    return 0
