"""The state database, opened for a command: read-write for one that acts, and for one that
only looks, never created (`reader`)."""

from __future__ import annotations

import sys
from pathlib import Path

from reconciler.cli.invocation import Invocation
from reconciler.engine.store import Store


def store(invocation: Invocation) -> Store:
    return Store(invocation.settings.db_path)


def no_database(invocation: Invocation, db_path: Path) -> None:
    used = f"config {invocation.path}" if invocation.path is not None else "no config file (defaults)"
    print(f"reconciler: no state database at {db_path} ({used}): nothing recorded here yet. "
          "To look at the service's sites, use its config: reconciler --config /etc/reconciler/reconciler.toml "
          "status (or set RECONCILER_CONFIG)", file=sys.stderr)


def reader(invocation: Invocation) -> Store:
    """The state database for a command that only looks. Looking never creates it: without one,
    say which config and state dir are in use and how to reach the service's, and show what
    can be shown from the declarations alone."""
    db_path = invocation.settings.db_path
    if db_path.exists():
        return Store(db_path)
    no_database(invocation, db_path)
    return Store.scratch()
