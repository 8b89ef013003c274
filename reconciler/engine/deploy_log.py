"""A deployment's output as it is written: the local copy once it is finished, else the
server's deployment.log followed until the deployment ends (or its reader is gone). Used by
`logs -f` and the API."""

from __future__ import annotations

import base64
import codecs
from collections.abc import AsyncGenerator, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.core.status import DeployStatus
from reconciler.errors import ReconcilerError, TransportError

if TYPE_CHECKING:
    from reconciler.engine.store import Store
    from reconciler.remote.transport.pool import TransportPool

FINAL = (DeployStatus.SUCCESS, DeployStatus.FAILED)
FOLLOW_EVERY = 1.0


def finished_copy(row: Mapping[str, Any], follow: bool) -> Path | None:
    """The local copy that is the whole answer: the deployment is over (or nobody follows) and
    its log was kept here. `logs` reads it without an event loop or a transport; this module
    imports the shell seam only when it must read the server's log, so that stays quick."""
    local = row.get("local_log")
    if (row["status"] in FINAL or not follow) and local and Path(local).is_file():
        return Path(local)
    return None


async def follow_log(store: Store, pool: TransportPool, row: Mapping[str, Any], timeout: float,
                     follow: bool = True, gone: Callable[[], bool] | None = None,
                     idle: bool = False) -> AsyncGenerator[str, None]:
    """Without `follow`, what there is now; with it, until the deployment ends, or until `gone()`
    (asked before every remote read) says the reader left: nothing more runs on the server for
    a reader that is not there. With `idle`, a poll that read nothing yields "" (a chance for
    the caller to write a keepalive, and so to notice a dead connection)."""
    if (copy := finished_copy(row, follow)) is not None:
        yield copy.read_text(errors="replace")
        return
    import asyncio  # the server's copy: only now the event loop's module and the shell seam

    from reconciler.remote.protocol import site_steps

    site: Mapping[str, Any] = store.site(row["site"]) or {}
    # The row's own server: a site on many servers has a row per server (its row says "web-1, web-2").
    server = row.get("server") or site.get("server")
    if not server or not row.get("log_file_path") or not row.get("deployment_path"):
        yield (row.get("message") or "") + "\n"
        return
    try:
        transport = pool.get(server)
    except ReconcilerError as exc:  # e.g. server "local" without allow_local
        yield f"\n[{exc}]\n"
        return
    # Transports hand back text; base64 keeps the bytes exact, so the offset stays right even
    # for invalid UTF-8 or a character split between two reads.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    offset = 0
    while True:
        if gone is not None and gone():
            return
        current = store.deployment(row["id"]) or row
        try:
            command = site_steps.read_log_base64(row["log_file_path"], offset)
            result = await transport.run(command.text, stdin=command.stdin, timeout=timeout)
        except TransportError as exc:
            yield f"\n[{exc}]\n"
            return
        raw = base64.b64decode(result.stdout) if result.ok else b""
        if raw:
            offset += len(raw)
            if text := decoder.decode(raw):
                yield text
        if current["status"] in FINAL or not follow:
            return
        if idle and not raw:
            yield ""
        await asyncio.sleep(FOLLOW_EVERY)
