"""`logs` the long way: a deployment's log read from its server, followed with -f while the
deployment runs."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

from reconciler.cli.invocation import Invocation
from reconciler.cli.state import reader
from reconciler.engine.converge import ssh_options
from reconciler.engine.deploy_log import follow_log
from reconciler.engine.rows import DeploymentRow
from reconciler.remote.transport.pool import TransportPool


def stream_log(invocation: Invocation, row: DeploymentRow, follow: bool, shown: Callable[[str], str]) -> int:
    return asyncio.run(_stream(invocation, row, follow, shown))


async def _stream(invocation: Invocation, row: DeploymentRow, follow: bool, shown: Callable[[str], str]) -> int:
    settings = invocation.settings
    store = reader(invocation)
    pool = TransportPool(ssh_options(settings), allow_local=settings.allow_local)
    try:
        async for chunk in follow_log(store, pool, row, settings.command_timeout, follow=follow):
            sys.stdout.write(shown(chunk))  # escaping is per character: any chunk boundary will do
            sys.stdout.flush()
    finally:
        await pool.close()
        store.close()
    return 0
