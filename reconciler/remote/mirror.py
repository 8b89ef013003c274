"""The server-side repository cache: a bare mirror per site at deployments/{domain}/.repo.

A deploy fetches only new objects into the mirror, then clones the release from it locally
(git hardlinks the objects, so this is fast and costs little disk). Every release is still
a full, independent git work tree whose `origin` is the real repository URL, so scripts may
run git and deleting the mirror harms no release. The mirror is re-created when the URL
changed or a fetch into it fails (a corrupt cache); a first deploy costs one clone, as before.
`.repo` is not a release name, so pruning and probing never count it.
"""

from __future__ import annotations

import posixpath

from reconciler.core.layout import LOG_NAME, SitePaths
from reconciler.remote.shell import quote

MIRROR_NAME = ".repo"


def mirror_path(paths: SitePaths) -> str:
    return posixpath.join(paths.deployments, MIRROR_NAME)


def clone_command(paths: SitePaths, repository: str, branch: str, commit: str, release: str) -> str:
    """Shell that refreshes the mirror and builds `release` at exactly `commit` from it."""
    mirror = mirror_path(paths)
    return (
        'export GIT_TERMINAL_PROMPT=0 GIT_SSH_COMMAND="${GIT_SSH_COMMAND:-ssh -o BatchMode=yes}"\n'
        f"set -e\nM={quote(mirror)}; R={quote(repository)}\n"
        "refresh() {\n"
        '  if [ -d "$M" ] && [ "$(git -C "$M" config --get remote.origin.url 2>/dev/null)" = "$R" ]; then\n'
        # Already there (only the script or shared list changed): no connection to the git host.
        f'    git -C "$M" cat-file -e {quote(commit + "^{commit}")} 2>/dev/null && return 0\n'
        '    git -C "$M" fetch --quiet --prune origin && return 0\n'
        "  fi\n"
        "  printf '==> (re)creating the repository cache\\n'\n"
        '  rm -rf -- "$M" "$M.tmp"\n'
        '  git clone --quiet --bare -- "$R" "$M.tmp"\n'
        "  git -C \"$M.tmp\" config remote.origin.fetch '+refs/heads/*:refs/heads/*'\n"
        '  mv -T -- "$M.tmp" "$M"\n'
        "}\n"
        f"cd -- {quote(paths.release(release))}\n"
        "{ printf '==> clone\\n'\n"
        "  refresh\n"
        f'  git -C "$M" cat-file -e {quote(commit + "^{commit}")}\n'
        '  git clone --quiet --no-checkout -- "$M" .reconciler-clone\n'
        "  mv .reconciler-clone/.git .git && rmdir .reconciler-clone\n"
        '  git remote set-url origin "$R"\n'
        f"  git checkout --quiet -B {quote(branch)} {quote(commit)} --\n"
        f"  git branch --quiet --set-upstream-to={quote('origin/' + branch)} || true\n"
        f"}} >> {quote(LOG_NAME)} 2>&1\n"
        f'test "$(git rev-parse HEAD)" = {quote(commit)}\n'
    )
