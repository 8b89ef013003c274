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
from reconciler.service.herald import Herald
from reconciler.service.webhooks import Notifications


class PassResult(NamedTuple):
    outcomes: list[SiteOutcome]
    notice: str
    skipped: dict[str, str]  # sites of other shards: domain -> why
    unreachable: str = ""    # why the declarations' Git host could not be fetched ("" when it could)


def one_pass(invocation: Invocation, site: str | None, dry_run: bool, progress: Progress | None = None,
             override_window: str | None = None) -> PassResult:
    """`override_window`: who runs it, when deploy windows are to hold nothing in this pass."""
    return asyncio.run(_pass(invocation, site, dry_run, progress, override_window))


async def _pass(invocation: Invocation, site: str | None, dry_run: bool, progress: Progress | None,
                override_window: str | None) -> PassResult:
    reconciler = Reconciler(invocation.settings, reader(invocation) if dry_run else store(invocation),
                            progress=progress.step if progress else None)
    reconciler.bench.override_window = override_window
    if progress is not None:
        progress.start()
    notifications = Notifications([] if dry_run else list(invocation.settings.notify))
    herald = Herald(lambda: invocation.settings, reconciler.store, notifications)
    try:
        reached = await reconciler.refresh_upstream()  # declarations on a Git host: what it has now
        if invocation.settings.repo_url is not None:
            herald.declarations(reconciler.fetch_problem)
        outcomes = await reconciler.run_pass(site, dry_run=dry_run)
        announce(herald, reconciler, outcomes)
        return PassResult(outcomes, reconciler.notice, reconciler.skipped,
                          "" if reached else reconciler.fetch_problem)
    finally:
        if progress is not None:
            await progress.stop()
        await notifications.drain()
        await reconciler.close()
        reconciler.store.close()


def announce(herald: Herald, reconciler: Reconciler, outcomes: list[SiteOutcome]) -> None:
    """`[[notify]]` for the work of a CLI pass, exactly as the daemon's (service/herald.py; the
    state database makes each event go out once, whoever saw it first)."""
    if not herald.notifications.targets:
        return
    sites = reconciler.load().sites
    for outcome in outcomes:
        if outcome.domain in sites:
            herald.site(sites[outcome.domain], outcome)


async def announce_now(invocation: Invocation, reconciler: Reconciler, outcomes: list[SiteOutcome]) -> None:
    """`announce` for work an operator action did in this process (a pin or unpin applied at
    once), its deliveries waited for like a pass's."""
    notifications = Notifications(list(invocation.settings.notify))
    try:
        announce(Herald(lambda: invocation.settings, reconciler.store, notifications), reconciler, outcomes)
    finally:
        await notifications.drain()


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


def report(result: PassResult, settings: Settings, site: str | None, dry_run: bool,
           why: dict[str, list[str]] | None = None) -> int:
    """Each outcome and its actions; `why`: per site, what in its declaration moved it (cli.why)."""
    outcomes, notice = result.outcomes, result.notice
    if notice:
        print(f"warning: {notice}")
    if result.unreachable:
        # An alarm, not a warning: nothing new can be applied until the Git host answers.
        print(f"reconciler: {printable(result.unreachable)}", file=sys.stderr)
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
        for reason in (why or {}).get(o.domain, []):
            print(f"  because {printable(reason)}")
        for action in o.actions:
            print(f"  {'would ' if dry_run else ''}{printable(action)}")
    return 0 if all(o.sync == SYNCED for o in outcomes) and not result.unreachable else 1


def build_now(invocation: Invocation, args: argparse.Namespace) -> int:
    """The pass that answers a retry/redeploy, for that site only (a running daemon holding the
    site's lock answers it instead: the request waits in the state database)."""
    if args.no_wait:
        return 0
    return report(one_pass(invocation, args.domain, False, live_progress()), invocation.settings, args.domain, False)
