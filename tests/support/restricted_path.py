"""A PATH that really lacks some programs: a directory of links to every program of this
machine's usual bin directories but the ones left out (a server without curl, without sudo)."""

from __future__ import annotations

import os
from pathlib import Path

_BIN_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def path_without(where: Path, *left_out: str) -> str:
    """A PATH (one directory, made under `where`) with every program but `left_out`."""
    bin_dir = where / ("bin-without-" + "-".join(left_out))
    bin_dir.mkdir(parents=True, exist_ok=True)
    for directory in _BIN_DIRS:
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            link = bin_dir / entry.name
            if entry.name in left_out or link.exists() or link.is_symlink():
                continue
            if os.access(entry.path, os.X_OK) and not entry.is_dir():
                link.symlink_to(entry.path)
    return str(bin_dir)
