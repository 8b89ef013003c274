"""`reconciler logs D [ID] [-f] [--raw]`: the output of a deployment (default: the latest).
Look-only when a finished copy is kept here; the server's log is streamed (cli.follow) only
when it is not."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from reconciler.cli.invocation import Invocation
from reconciler.cli.look import open_site_state
from reconciler.core.text import printable_lines
from reconciler.engine.deploy_log import finished_copy
from reconciler.engine.rows import DeploymentRow


def handle(invocation: Invocation, args: argparse.Namespace) -> int:
    """A deployment's output. Build output is whatever the app's scripts (composer, artisan, npm)
    printed: unless --raw, its control characters are shown escaped (`printable_lines`), on a
    terminal and when piped alike, since `logs | tail`, `| grep` and `| less -R` end on a
    terminal too; only a byte-exact copy (--raw) keeps them."""
    store = open_site_state(invocation, args.domain)
    if store is None:
        return 1
    try:
        rows = store.deployments(args.domain)
        row: DeploymentRow | None = rows[0] if rows and args.id is None else None
        if args.id is not None:
            row = store.deployment(args.id)
            if row is not None and row["site"] != args.domain:
                row = None
    finally:
        store.close()
    if row is None:
        print(f"reconciler: {args.domain}: no such deployment", file=sys.stderr)
        return 1
    local = row.get("local_log")
    remote = bool(row.get("deployment_path") and row.get("log_file_path"))
    if not args.follow and not (local and Path(local).is_file()) and not remote and not row.get("message"):
        print(f"reconciler: no log kept for deployment {row['id']}", file=sys.stderr)
        return 1
    # The local copy when there is one (read here: no event loop, no transport); else the
    # server's deployment.log (after a database rebuild, or while it runs), followed with -f.
    shown: Callable[[str], str] = str if args.raw else printable_lines
    if (copy := finished_copy(row, args.follow)) is not None:
        sys.stdout.write(shown(copy.read_text(errors="replace")))
        return 0
    from reconciler.cli.follow import stream_log  # asyncio and the transport: only for this way

    return stream_log(invocation, row, args.follow, shown)
