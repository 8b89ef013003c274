"""`reconciler redeploy D [--no-wait]`: build a site's current commit again as a fresh release."""

from __future__ import annotations

import argparse

from reconciler.cli.acting import act, then_build
from reconciler.cli.invocation import Invocation
from reconciler.cli.person import person
from reconciler.engine import actions


def handle(invocation: Invocation, args: argparse.Namespace) -> int:
    act(invocation, lambda r: actions.redeploy(r, args.domain, person()))
    done = f"{args.domain}: a fresh build of the current commit is requested"
    return then_build(invocation, args, done, "building now")
