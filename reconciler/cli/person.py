"""Who runs this command, as history and a pin commit's author name them ("Name <email>").

The docs (guide/service.md) have operators run the CLI as the service user (`sudo -u reconciler reconciler ...`),
so the OS user alone would name every action "reconciler". The person is, in this order:
* `SUDO_USER`: who ran sudo. Under sudo the git identity found is the service user's (HOME is
  its home), never the operator's, so sudo's word comes first.
* The git identity (`GIT_AUTHOR_NAME`/`GIT_AUTHOR_EMAIL`, else `git config user.name` and
  `user.email`): what a person running it as themselves has told git they are.
* The OS user, as a last resort.
An email missing from the first and last is `<user>@<this host>`.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
from collections.abc import Callable, Mapping

GIT_TIMEOUT = 5.0

# `git config <key>` -> its value ("" when unset or git is missing).
GitConfig = Callable[[str], str]


def _git_config(key: str) -> str:
    try:
        done = subprocess.run(["git", "config", "--get", key], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _clean(text: str) -> str:
    """One line without the characters that would break "Name <email>" (the author's syntax)."""
    return " ".join("".join(" " if c in "<>\0" or ord(c) < 32 else c for c in text).split())


def person(env: Mapping[str, str] | None = None, git_config: GitConfig = _git_config) -> str:
    """"Name <email>" of the person behind this run (see the module's docstring)."""
    env = os.environ if env is None else env
    host = socket.gethostname() or "localhost"
    sudo_user = _clean(env.get("SUDO_USER", ""))
    if sudo_user:
        return f"{sudo_user} <{sudo_user}@{host}>"
    user = _clean(_os_user()) or "unknown"
    name = _clean(env.get("GIT_AUTHOR_NAME", "") or git_config("user.name")) or user
    email = _clean(env.get("GIT_AUTHOR_EMAIL", "") or git_config("user.email")).replace(" ", "")
    return f"{name} <{email or f'{user}@{host}'}>"


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no passwd entry (a container's arbitrary uid)
        return f"uid{os.getuid()}"
