"""`reconciler validate [PATH]`: check declarations without touching any server."""

from __future__ import annotations

import argparse
from pathlib import Path

from reconciler.cli.invocation import Invocation
from reconciler.core import declarations
from reconciler.engine import source


def handle(invocation: Invocation, args: argparse.Namespace) -> int:
    settings = invocation.settings
    path = Path(args.path) if args.path else settings.local_repo
    # A work tree is checked as files on disk (a pre-commit check); a bare repository at its tip.
    if (path / declarations.SITES_DIR).is_dir() or path.name == declarations.SITES_DIR:
        decls = source.load_directory(path)
    else:
        decls = source.load(path, settings.branch)
    # As the reconciler with these settings would apply them: local sites need allow_local.
    decls = declarations.refuse_local(decls, settings.allow_local)
    for line in decls.errors:
        print(line)
    print(f"{len(decls.sites)} valid, {len(decls.invalid)} invalid")
    return 1 if decls.invalid else 0
