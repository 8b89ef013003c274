"""A pass run from the command line (`reconcile`, `diff`, and the pass that answers `retry`
and `redeploy`), and the report of its outcomes."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import NamedTuple

from reconciler.cli.invocation import Invocation
from reconciler.cli.progress import Progress
from reconciler.cli.state import reader, store
from reconciler.config import Settings
from reconciler.core.plan import SYNCED
from reconciler.core.text import printable
from reconciler.engine.converge import Reconciler
from reconciler.engine.outcome import SiteOutcome


class PassResult(NamedTuple):
    outcomes: list[SiteOutcome]
    notice: str
    skipped: dict[str, str]  # sites of other shards: domain -> why


def one_pass(invocation: Invocation, site: str | None, dry_run: bool, progress: Progress | None = None) -> PassResult:
    return asyncio.run(_pass(invocation, site, dry_run, progress))


async def _pass(invocation: Invocation, site: str | None, dry_run: bool, progress: Progress | None) -> PassResult:
    reconciler = Reconciler(invocation.settings, reader(invocation) if dry_run else store(invocation),
                            progress=progress.step if progress else None)
    if progress is not None:
        progress.start()
    try:
        await reconciler.refresh_upstream()  # declarations on a Git host: what it has now
        outcomes = await reconciler.run_pass(site, dry_run=dry_run)
        return PassResult(outcomes, reconciler.notice, reconciler.skipped)
    finally:
        if progress is not None:
            await progress.stop()
        await reconciler.close()
        reconciler.store.close()


def live_progress() -> Progress:
    return Progress(sys.stderr, live=sys.stderr.isatty())


def skipped(result: PassResult, settings: Settings, site: str | None) -> int | None:
    """Say what a sharded pass left to other instances. An exit status when `site` is one of
    them (1: nothing was done for it), else None."""
    if site is not None and site in result.skipped:
        print(f"reconciler: {site}: {printable(result.skipped[site])}", file=sys.stderr)
        return 1
    if result.skipped and site is None:
        count = len(result.skipped)
        print(f"shard {settings.shard}: {count} site{'s' if count != 1 else ''} of other shards skipped")
    return None


def report(result: PassResult, settings: Settings, site: str | None, dry_run: bool) -> int:
    outcomes, notice = result.outcomes, result.notice
    if notice:
        print(f"warning: {notice}")
    if (code := skipped(result, settings, site)) is not None:
        return code
    if site and not outcomes:
        print(f"reconciler: {site}: no such site declared", file=sys.stderr)
        return 1
    for o in outcomes:
        line = f"{o.domain}: {o.sync}/{o.health}"
        if o.message:
            line += f" - {o.message}"
        print(printable(line))
        for action in o.actions:
            print(f"  {'would ' if dry_run else ''}{printable(action)}")
    return 0 if all(o.sync == SYNCED for o in outcomes) else 1


def build_now(invocation: Invocation, args: argparse.Namespace) -> int:
    """The pass that answers a retry/redeploy, for that site only (a running daemon holding the
    site's lock answers it instead: the request waits in the state database)."""
    if args.no_wait:
        return 0
    return report(one_pass(invocation, args.domain, False, live_progress()), invocation.settings, args.domain, False)
