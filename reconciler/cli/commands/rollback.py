"""`reconciler rollback D [RELEASE]`: commit a pin to an older release."""

from __future__ import annotations

import argparse

from reconciler.cli.acting import act
from reconciler.cli.invocation import Invocation
from reconciler.cli.person import person
from reconciler.engine import actions


def handle(invocation: Invocation, args: argparse.Namespace) -> int:
    release, commit = act(invocation, lambda r: actions.rollback(r, args.domain, args.release, args.author or person()))
    print(f"{args.domain}: pinned to {release} (commit {commit[:12]})")
    return 0
