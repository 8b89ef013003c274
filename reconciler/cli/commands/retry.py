"""`reconciler retry D [--no-wait]`: forget a site's remembered failure and build again."""

from __future__ import annotations

import argparse

from reconciler.cli.acting import act, then_build
from reconciler.cli.invocation import Invocation
from reconciler.cli.person import person
from reconciler.engine import actions


def handle(invocation: Invocation, args: argparse.Namespace) -> int:
    forgiven = act(invocation, lambda r: actions.retry(r, args.domain, person()))
    done = f"{args.domain}: forgot {forgiven} remembered failure{'s' if forgiven != 1 else ''}"
    return then_build(invocation, args, done,
                      "retrying now (a failed build is built again, a failed health check checked again)")
