"""`reconciler unpin D`: commit the removal of a site's pin."""

from __future__ import annotations

import argparse

from reconciler.cli.acting import act
from reconciler.cli.invocation import Invocation
from reconciler.cli.person import person
from reconciler.engine import actions


def handle(invocation: Invocation, args: argparse.Namespace) -> int:
    commit = act(invocation, lambda r: actions.unpin(r, args.domain, args.author or person()))
    print(f"{args.domain}: unpinned (commit {commit[:12]})")
    return 0
