"""`reconciler run`: the daemon."""

from __future__ import annotations

import argparse

from reconciler.cli.invocation import Invocation
from reconciler.service.daemon import run_daemon


def handle(invocation: Invocation, args: argparse.Namespace) -> int:
    invocation.state_dir()  # missing or not writable: a clear error (exit 2), not the daemon's traceback
    # The daemon reads the config file again when it changes: it gets the file and the flags.
    return run_daemon(invocation.settings, invocation.config, invocation.overrides)
