"""The state database, opened for a command: read-write for one that acts, and for one that
only looks, never created (`reader`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.cli.invocation import Invocation

if TYPE_CHECKING:
    # Imported where a database is opened: `status` reads `monitoring_blind` without sqlite-utils.
    from reconciler.engine.store import Store


def store(invocation: Invocation) -> Store:
    from reconciler.engine.store import Store

    invocation.state_dir()  # missing or not writable: a clear error, not a traceback
    return Store(invocation.settings.db_path)


def no_database(invocation: Invocation, db_path: Path) -> None:
    used = f"config {invocation.path}" if invocation.path is not None else "no config file (defaults)"
    print(f"reconciler: no state database at {db_path} ({used}): nothing recorded here yet. "
          "To look at the service's sites, use its config: reconciler --config /etc/reconciler/reconciler.toml "
          "status (or set RECONCILER_CONFIG)", file=sys.stderr)


def monitoring_blind(invocation: Invocation, db_path: Path) -> str | None:
    """Why a monitoring check (`status --exit-code`) cannot see the service's sites, or None:
    no config file in use, or no state database. An empty table there is no "all is well": a
    mistyped check must alarm (exit 2, a configuration problem), never stay green."""
    if invocation.path is None:
        return ("no config file (neither --config, $RECONCILER_CONFIG nor ./reconciler.toml): a monitoring "
                "check must read the service's, e.g. reconciler --config /etc/reconciler/reconciler.toml "
                "status --exit-code")
    if not db_path.exists():
        return (f"no state database at {db_path} (config {invocation.path}): nothing was ever recorded "
                "there; is this the service's config and is the service running?")
    return None


def reader(invocation: Invocation) -> Store:
    """The state database for a command that only looks. Looking never creates it: without one,
    say which config and state dir are in use and how to reach the service's, and show what
    can be shown from the declarations alone."""
    from reconciler.engine.store import Store

    db_path = invocation.settings.db_path
    if db_path.exists():
        return Store(db_path)
    no_database(invocation, db_path)
    return Store.scratch()
