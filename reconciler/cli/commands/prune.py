"""`reconciler prune [--keep N] [--dry-run] [--site D]`: remove old releases now."""

from __future__ import annotations

import argparse
import asyncio
import sys

from reconciler.cli.acting import acting
from reconciler.cli.invocation import Invocation
from reconciler.core.text import printable


def handle(invocation: Invocation, args: argparse.Namespace) -> int:
    if args.keep is not None and args.keep < 1:
        print("reconciler: --keep must be at least 1", file=sys.stderr)
        return 2
    return asyncio.run(_prune(invocation, args))


async def _prune(invocation: Invocation, args: argparse.Namespace) -> int:
    async with acting(invocation) as reconciler:
        results = await reconciler.prune(args.site, args.keep, args.dry_run)
        # History's retention is the whole database's: not a part of pruning one site.
        expired = reconciler.expire_history(args.dry_run) if args.site is None else None
    if args.site and not results:
        print(f"reconciler: {args.site}: no such site declared", file=sys.stderr)
        return 1
    for result in results:
        if result.message:
            print(f"{result.domain}: {printable(result.message)}")
            continue
        verb = "would prune" if args.dry_run else "pruning"
        where = f" on {result.server}" if result.server else ""
        print(f"{result.domain}: {verb}{where} {', '.join(result.releases) if result.releases else 'nothing'}")
    if expired is not None and invocation.settings.retention_days is not None:
        print(expired.describe(invocation.settings.retention_days, args.dry_run))
    if reconciler.skipped and args.site is None:
        count = len(reconciler.skipped)
        print(f"shard {invocation.settings.shard}: {count} site{'s' if count != 1 else ''} of other shards skipped")
    return 0
