"""`reconciler reconcile [--site D] [--dry-run]`: one full pass now."""

from __future__ import annotations

import argparse

from reconciler.cli.invocation import Invocation
from reconciler.cli.passes import live_progress, one_pass, report


def handle(invocation: Invocation, args: argparse.Namespace) -> int:
    progress = None if args.dry_run else live_progress()
    result = one_pass(invocation, args.site, args.dry_run, progress)
    return report(result, invocation.settings, args.site, args.dry_run)
