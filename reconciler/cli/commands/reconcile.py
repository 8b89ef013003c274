"""`reconciler reconcile [--site D] [--dry-run] [--override-window]`: one full pass now."""

from __future__ import annotations

import argparse

from reconciler.cli.invocation import Invocation
from reconciler.cli.passes import live_progress, one_pass, report
from reconciler.cli.person import person
from reconciler.cli.why import reasons


def handle(invocation: Invocation, args: argparse.Namespace) -> int:
    progress = None if args.dry_run else live_progress()
    # Deploy windows hold nothing in this pass; each deploy they held is recorded as this person's.
    who = person() if args.override_window else None
    result = one_pass(invocation, args.site, args.dry_run, progress, who)
    # A dry run also says what in a site's declaration moved it (a template, the defaults).
    why = reasons(invocation, [o.domain for o in result.outcomes if o.actions]) if args.dry_run else {}
    return report(result, invocation.settings, args.site, args.dry_run, why)
