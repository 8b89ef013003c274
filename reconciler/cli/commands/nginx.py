"""`reconciler nginx D`: print an nginx server block for a site (cli.nginx writes it)."""

from __future__ import annotations

import argparse
import sys

from reconciler.cli.applied import applied
from reconciler.cli.invocation import Invocation
from reconciler.cli.nginx import nginx_server_block


def handle(invocation: Invocation, args: argparse.Namespace) -> int:
    site = applied(invocation).sites.get(args.domain)
    if site is None:
        print(f"reconciler: {args.domain}: no such valid site declared", file=sys.stderr)
        return 1
    print(nginx_server_block(site))
    return 0
