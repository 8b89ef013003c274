"""`reconciler accept [COMMIT]`: with require_signed, accept a signed commit that does not
descend from the last verified one (recorded as an override, with who asked)."""

from __future__ import annotations

import argparse

from reconciler.cli.invocation import Invocation
from reconciler.cli.person import person
from reconciler.cli.state import store
from reconciler.engine.converge import Reconciler


def handle(invocation: Invocation, args: argparse.Namespace) -> int:
    by = person()
    reconciler = Reconciler(invocation.settings, store(invocation))
    try:
        commit, previous = reconciler.accept(args.commit, by)
    finally:
        reconciler.store.close()
    print(f"accepted {commit[:12]} as the verified declarations commit (was {(previous or 'none')[:12]}); "
          f"recorded as an override by {by}")
    return 0
