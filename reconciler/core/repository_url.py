"""Which repository a git URL names, whatever its form: the one normaliser of repository URLs.

A forge names one repository in several ways (a push payload carries `clone_url`, `ssh_url`,
`html_url`...) and an operator declares it in one of them: `ssh://git@host:2200/srv/git/shop.git`,
`git@host:srv/git/shop.git` and `https://host/srv/git/shop` are one repository. Its key is the
host (no user, no port, lower case) and the path (no leading or trailing '/', no `.git`, no
`~/` home prefix, lower case: forges match paths case-insensitively). A local path or `file://`
URL has no host: its key is its absolute path.

Payload URLs are untrusted (any client may post them): `repository_key` is total, it never
raises, and it only compares; nothing it returns is ever used to reach a host.
"""

from __future__ import annotations

import re

# `[user@]host:path` with no scheme: git's scp-like syntax (a host, then ':' before any '/').
_SCP = re.compile(r"^(?:[^@/]*@)?(\[[^\]]*\]|[^:/\[\]]+):(?!//)(.*)$", re.DOTALL)


def repository_key(url: str) -> str:
    """`host/path` of the repository `url` names: equal for every URL form of one repository."""
    text = url.strip().lower()
    scheme, sep, rest = text.partition("://")
    if sep and "/" not in scheme:
        # scheme://[user@]host[:port]/path (user information may hold '@': the last one ends it)
        authority, _, path = rest.partition("/")
        host = _host(authority.rpartition("@")[2])
    elif (scp := _SCP.match(text)) is not None:
        host, path = _host(scp.group(1)), scp.group(2)
    else:
        host, path = "", text  # a local path
    return f"{host}/{_path(path)}"


def _host(authority: str) -> str:
    """The host of `host[:port]` or `[v6]:port`, without brackets, port, or a DNS root dot."""
    if authority.startswith("["):
        return authority[1:].partition("]")[0]
    return authority.partition(":")[0].rstrip(".")


def _path(path: str) -> str:
    path = path.strip().strip("/").removeprefix("~/")  # `ssh://host/~/r` is `host:r`: both from home
    return path.removesuffix(".git").strip("/")
