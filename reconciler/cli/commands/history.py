"""`reconciler history D [--json]`: a site's deployments, newest first. Look-only (cli.look)."""

from __future__ import annotations

import argparse
import json
import sys

from reconciler.cli.invocation import Invocation
from reconciler.cli.look import open_site_state
from reconciler.cli.render import history_table, use_color
from reconciler.engine.views import history_views


def handle(invocation: Invocation, args: argparse.Namespace) -> int:
    store = open_site_state(invocation, args.domain)
    if store is None:
        return 1
    try:
        views = history_views(store, args.domain)
    finally:
        store.close()
    if args.json:
        print(json.dumps(views, indent=2))
        return 0
    print(history_table(views, use_color(sys.stdout)))
    return 0
