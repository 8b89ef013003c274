"""`reconciler unlock D`: remove a site's lock on its server."""

from __future__ import annotations

import argparse
import asyncio
import sys

from reconciler.cli.acting import acting
from reconciler.cli.invocation import Invocation
from reconciler.core.layout import SitePaths
from reconciler.remote import lock


def handle(invocation: Invocation, args: argparse.Namespace) -> int:
    return asyncio.run(_unlock(invocation, args.domain))


async def _unlock(invocation: Invocation, domain: str) -> int:
    async with acting(invocation) as reconciler:
        site = reconciler.load().sites.get(domain)
        if site is None:
            print(f"reconciler: {domain}: no such valid site declared", file=sys.stderr)
            return 1
        owner = await lock.unlock(reconciler.pool.get(site.server), SitePaths(site.base_path, domain),
                                  invocation.settings.command_timeout)
        print(f"{domain}: lock removed (was held by {owner})" if owner else f"{domain}: was not locked")
        return 0
