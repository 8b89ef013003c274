"""What the look-only commands (`status`, `history`, `logs`) read, the quick way when it can
be: the state database through plain sqlite3, the declarations from the memo of their commit.
The slow ways (sqlite-utils, pygit2, pydantic) are imported only when taken."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.cli.invocation import Invocation
from reconciler.engine.branch_tip import read_tip
from reconciler.engine.memo import Looks, Memo
from reconciler.engine.state_reader import StaleSchema, StateReader

if TYPE_CHECKING:
    from reconciler.engine.store import Store
    from reconciler.engine.views import Declared


def open_state(invocation: Invocation, looks: Looks) -> StateReader | Store:
    """The state database, through plain sqlite3 (no sqlite-utils), unless it is missing (the
    scratch Store says so) or older than its readers (the Store migrates it)."""
    if looks.db_path.exists():
        try:
            return StateReader(looks.db_path)
        except (StaleSchema, sqlite3.Error):
            pass
    from reconciler.cli.state import reader  # the slow way: sqlite-utils

    return reader(invocation)


def declared(invocation: Invocation, looks: Looks) -> dict[str, Declared] | None:
    """What status shows of the applied declarations (None: unreadable, the database only).
    Remembered per commit: with the branch tip read from git's ref files and its summary in the
    memo, neither pygit2 nor the validators are loaded. `require_signed` always takes the long
    way (which commit applies depends on the verification record)."""
    tip = read_tip(Path(looks.local_repo), looks.branch) if looks.require_signed == "off" else None
    memo = Memo(Path(looks.state_dir))
    if tip is not None and (found := memo.declared(tip, looks.allow_local)) is not None:
        return found
    # The slow way: pygit2 reads the commit, pydantic validates it.
    from reconciler.cli.applied import applied_or_none
    from reconciler.engine.views import declared as declared_sites

    decls = applied_or_none(invocation)
    if decls is None:
        return None
    sites = declared_sites(decls)
    if tip is not None and decls.commit == tip and looks.db_path.exists():
        memo.remember_declared(tip, looks.allow_local, sites)
    return sites


def open_site_state(invocation: Invocation, domain: str) -> StateReader | Store | None:
    """`open_state` for a command about one site (`history D`, `logs D`): None, said on stderr,
    when the site is neither recorded in the state database nor declared."""
    looks = invocation.looks()
    store = open_state(invocation, looks)
    try:
        if store.site(domain) is not None or domain in (declared(invocation, looks) or {}):
            return store
    except BaseException:
        store.close()
        raise
    store.close()
    print(f"reconciler: {domain}: unknown site", file=sys.stderr)
    return None
