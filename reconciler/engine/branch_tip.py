"""The committed tip of a branch read straight from git's ref files: a loose ref, else
packed-refs. Without pygit2 (a tenth of a second to import), for `status`, which only needs
the tip's id to find the declarations it has already seen (`engine.memo`).

Only the plain layouts are read: a bare repository, or a work tree whose `.git` is a directory
or a `gitdir:` file (with `commondir`). Anything else (a symbolic branch ref, the reftable
format, an unreadable file) gives None and the caller reads with pygit2 (`engine.source`).
Like `source.open_repository`, it never searches parent directories.
"""

from __future__ import annotations

import re
from pathlib import Path

_OBJECT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def _git_dir(repo: Path) -> Path | None:
    dotgit = repo / ".git"
    if dotgit.is_dir():
        return dotgit
    if dotgit.is_file():
        text = dotgit.read_text().strip()
        return (repo / text.removeprefix("gitdir:").strip()) if text.startswith("gitdir:") else None
    if (repo / "HEAD").is_file() and (repo / "objects").is_dir():
        return repo  # bare
    return None


def _common_dir(git_dir: Path) -> Path:
    """Where refs live: a linked work tree keeps them in the main repository (`commondir`)."""
    pointer = git_dir / "commondir"
    return git_dir / pointer.read_text().strip() if pointer.is_file() else git_dir


def read_tip(repo: Path, branch: str) -> str | None:
    """The object id `refs/heads/<branch>` names, or None when it cannot be read this way."""
    if not branch or branch.startswith("/") or ".." in branch.split("/") or "\\" in branch:
        return None  # never a file outside refs/heads/
    try:
        git_dir = _git_dir(repo)
        if git_dir is None:
            return None
        common = _common_dir(git_dir)
        if (common / "reftable").exists():
            return None
        loose = common / "refs" / "heads" / branch
        if loose.is_file():  # a loose ref wins over packed-refs, as in git
            value = loose.read_text().strip()
            return value if _OBJECT_ID.fullmatch(value) else None
        packed = common / "packed-refs"
        if packed.is_file():
            wanted = f"refs/heads/{branch}"
            for line in packed.read_text().splitlines():
                value, _, name = line.partition(" ")
                if name == wanted and _OBJECT_ID.fullmatch(value):
                    return value
    except (OSError, UnicodeDecodeError):
        return None
    return None
