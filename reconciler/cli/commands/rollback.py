"""`reconciler rollback D [RELEASE] [--no-wait]`: commit a pin to an older release and return
when it is live (`--no-wait`: once it is committed)."""

from __future__ import annotations

import argparse
import time

from reconciler.cli.acting import act, until_live
from reconciler.cli.invocation import Invocation
from reconciler.cli.person import person
from reconciler.engine import actions
from reconciler.engine.converge import Reconciler


def handle(invocation: Invocation, args: argparse.Namespace) -> int:
    started = time.monotonic()

    async def work(reconciler: Reconciler) -> int:
        release, commit = await actions.rollback(reconciler, args.domain, args.release, args.author or person())
        print(f"{args.domain}: pinned to {release} (commit {commit[:12]})", flush=True)
        return await until_live(reconciler, invocation, args.domain, commit, started, args.no_wait)

    return act(invocation, work)
