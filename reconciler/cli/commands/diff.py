"""`reconciler diff [--site D]` (alias `plan`): what the next pass would do, per site."""

from __future__ import annotations

import argparse
import sys

from reconciler.cli.invocation import Invocation
from reconciler.cli.passes import one_pass, skipped
from reconciler.cli.why import reasons
from reconciler.core.plan import SYNCED
from reconciler.core.text import printable


def handle(invocation: Invocation, args: argparse.Namespace) -> int:
    result = one_pass(invocation, args.site, True)
    outcomes, notice = result.outcomes, result.notice
    if notice:
        print(f"warning: {notice}")
    if (code := skipped(result, invocation.settings, args.site)) is not None:
        return code
    if args.site and not outcomes:
        print(f"reconciler: {args.site}: no such site declared", file=sys.stderr)
        return 1
    pending = False
    # Only for sites with work: what in their declaration moved them (a template, the defaults).
    why = reasons(invocation, [o.domain for o in outcomes if o.actions])
    # A message can carry a server's or a script's output: printed escaped, like every other view.
    for o in outcomes:
        if o.actions:
            pending = True
            print(f"{o.domain} ({o.server}):")
            for reason in why.get(o.domain, []):
                print(f"  because {printable(reason)}")
            for action in o.actions:
                print(f"  + {printable(str(action))}")
        elif o.sync != SYNCED:
            print(f"{o.domain} ({o.server}): {o.sync} - {printable(o.message)}")
        else:
            print(f"{o.domain} ({o.server}): up to date")
    # Nonzero whenever the fleet is not simply in step: work pending, or a site Failed/Invalid/
    # Unknown that no pass will fix by itself (a cron or CI check must notice both).
    return 1 if pending or any(o.sync != SYNCED for o in outcomes) else 0
