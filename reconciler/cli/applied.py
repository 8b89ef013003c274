"""The declarations the daemon applies, read for a command: the branch tip, or with
`require_signed` the newest verified commit."""

from __future__ import annotations

import sys

from reconciler.cli.invocation import Invocation
from reconciler.core import declarations
from reconciler.core.declarations import Declarations
from reconciler.engine import source
from reconciler.errors import DeclarationError


def applied(invocation: Invocation) -> Declarations:
    """The declarations the daemon applies: the branch tip, or with `require_signed` the newest
    verified commit, never an unverified tip (whose file names and pins are untrusted). Says so
    when the tip is newer and not applied."""
    settings = invocation.settings
    if settings.require_signed == "off":
        return declarations.refuse_local(source.load(settings.local_repo, settings.branch), settings.allow_local)
    # Only require_signed needs the verification record, and so the engine and the database.
    from reconciler.cli.state import reader
    from reconciler.engine.converge import Reconciler

    store = reader(invocation)
    try:
        decls = Reconciler(settings, store).load()
    finally:
        store.close()
    if decls.notice:
        print(f"reconciler: warning: {declarations.printable(decls.notice)}", file=sys.stderr)
    return decls


def applied_or_none(invocation: Invocation) -> Declarations | None:
    """`applied`, or None (with a warning) when they cannot be read: a look-only command then
    shows the state database alone."""
    try:
        return applied(invocation)
    except DeclarationError as exc:
        print(f"reconciler: warning: {exc}; showing the state database only", file=sys.stderr)
        return None
