"""Command line: the parser, assembled from the table of commands (`cli.commands`), and the
dispatch to the one command that runs. Exit codes follow SPEC section 5.

Imports are light here: `--help`, `status`, `history` and `logs` must answer at once,
and pydantic, pygit2, sqlite-utils, asyncio and asyncssh each cost tens of milliseconds to
import. A command's module, with whatever it needs, is imported only when that command runs.
tests/cli/test_startup.py checks which modules the look-only commands load; bench/cli.py times
them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from reconciler.cli.commands import COMMANDS, canonical
from reconciler.cli.invocation import Handler, Invocation
from reconciler.errors import ConfigError, DeclarationError, ReconcilerError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reconciler",
        description="Converge PHP/Laravel sites on SSH servers to the declarations in a Git repository.",
        epilog="example: reconciler --repo /srv/sites.git reconcile --dry-run",
    )
    parser.add_argument("--config", help="settings file (default: $RECONCILER_CONFIG or ./reconciler.toml)")
    parser.add_argument("--repo", help="declarations repository (default: current directory)")
    parser.add_argument("--state-dir", help="database and logs (default: ./state)")
    parser.add_argument("--shard", metavar="I/N",
                        help='own only the servers of shard I of N, e.g. 2/3 (default: shard from the config, "1/1")')
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help, aliases=list(command.aliases),
                           epilog=f"example:\n  {command.example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        for argument in command.arguments:
            p.add_argument(*argument.flags, **argument.options)
    return parser


def _handler(name: str) -> Handler:
    handler: Handler = importlib.import_module(COMMANDS[name].module).handle
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    name = canonical(args.command)
    try:
        invocation = Invocation(args.config, {"repo": args.repo, "state_dir": args.state_dir, "shard": args.shard})
        if not COMMANDS[name].looks_only:
            invocation.settings  # noqa: B018 - a bad config exits 2 before anything runs
    except ConfigError as exc:
        print(f"reconciler: {exc}", file=sys.stderr)
        return 2
    try:
        return _handler(name)(invocation, args)
    except ConfigError as exc:
        print(f"reconciler: {exc}", file=sys.stderr)
        return 2
    except DeclarationError as exc:
        # `reconcile`: declarations that cannot be read are a bad config (exit 2, SPEC section 5).
        print(f"reconciler: {exc}", file=sys.stderr)
        return 2 if name == "reconcile" else 1
    except ReconcilerError as exc:
        print(f"reconciler: {exc}", file=sys.stderr)
        return 1
