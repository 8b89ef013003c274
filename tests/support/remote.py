"""One command over a transport made for it, from synchronous test code: run, then close the
transport whatever happened (an SSH connection left open would outlive the test's sshd)."""

from __future__ import annotations

import asyncio

from reconciler.remote.transport.base import Result, Transport


def run_once(transport: Transport, command: str, timeout: float) -> Result:
    async def go() -> Result:
        try:
            return await transport.run(command, timeout=timeout)
        finally:
            await transport.close()

    return asyncio.run(go())
