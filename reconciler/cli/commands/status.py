"""`reconciler status [--json] [--exit-code] [D]`: every declared site, or one in detail.
Look-only: it starts without the heavy libraries (cli.look)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from reconciler.cli.commands import ATTENTION
from reconciler.cli.invocation import Invocation
from reconciler.cli.look import declared, open_state
from reconciler.cli.render import site_detail, table, use_color
from reconciler.cli.state import monitoring_blind
from reconciler.core.shard import Shard
from reconciler.core.status import Health, Sync
from reconciler.core.text import printable
from reconciler.engine.state_reader import FETCH_PROBLEM
from reconciler.engine.views import declared_views, history_views, in_step

HEADERS = ["SITE", "SERVER", "SERVERS", "SYNC", "HEALTH", "ACTIVE", "COMMIT", "PINNED", "LAST DEPLOY", "MESSAGE"]


def handle(invocation: Invocation, args: argparse.Namespace) -> int:
    looks = invocation.looks()
    if args.exit_code and (blind := monitoring_blind(invocation, looks.db_path)) is not None:
        print(f"reconciler: status --exit-code: {blind}", file=sys.stderr)
        return 2
    store = open_state(invocation, looks)
    shard = Shard.parse(looks.shard)
    try:
        views = declared_views(store, declared(invocation, looks), shard)
        if args.domain:
            views = [v for v in views if v["domain"] == args.domain]
            if not views:
                print(f"reconciler: {args.domain}: unknown site (not declared, never seen)", file=sys.stderr)
                return 1
        # Another shard's sites are another instance's to alarm about.
        code = attention_code([v for v in views if not v["skipped"]]) if args.exit_code else 0
        if unreachable := store.meta(FETCH_PROBLEM):
            # Nothing new is applied until the Git host answers: an alarm of its own.
            print(f"reconciler: {printable(unreachable)}", file=sys.stderr)
            code = ATTENTION if args.exit_code else 0
        if args.json:
            print(json.dumps(views, indent=2))
            return code
        color = use_color(sys.stdout)
        if args.domain:
            print(site_detail(views[0], history_views(store, args.domain)[:5], color))
            return code
    finally:
        store.close()
    _print_table(views, shard, color)
    return code


def _print_table(views: list[dict[str, Any]], shard: Shard, color: bool) -> None:
    rows = [[v["domain"], v["server"], in_step(v), v["sync"], v["health"], v["active_release"] or "-",
             (v["active_commit"] or "-")[:12], v["pinned"] or "-", v["last_deployed_at"] or "-",
             v["message"]] for v in views]
    headers = list(HEADERS)
    if not shard.whole:
        headers.insert(2, "SHARD")
        for row, view in zip(rows, views, strict=True):
            row.insert(2, view["shard"])
        skipped = sum(1 for v in views if v["skipped"])
        print(f"shard {shard}: {len(views) - skipped} site(s) here, {skipped} skipped (other shards)")
    print(table(headers, rows, color=color))


def attention_code(views: list[dict[str, Any]]) -> int:
    """ATTENTION when a site is Failed, Invalid or Unknown, or Degraded or Missing; Progressing
    and OutOfSync are the reconciler at work, not an alarm."""
    bad_sync = {Sync.FAILED, Sync.INVALID, Sync.UNKNOWN}
    bad_health = {Health.DEGRADED, Health.MISSING}
    return ATTENTION if any(v["sync"] in bad_sync or v["health"] in bad_health for v in views) else 0
