"""The server-side repository cache: a bare mirror per site at deployments/{domain}/.repo.

A deploy fetches only new objects into the mirror, then clones the release from it locally
(git hardlinks the objects, so this is fast and costs little disk). Every release is still
a full, independent git work tree whose `origin` is the real repository URL, so scripts may
run git and deleting the mirror harms no release. The mirror is re-created when the URL
changed or a fetch into it fails (a corrupt cache); a first deploy costs one clone, as before.
`.repo` is not a release name, so pruning and probing never count it.

The commands that refresh the mirror and clone from it are built by `protocol.site_steps`.
"""

from __future__ import annotations

import posixpath

from reconciler.core.layout import SitePaths

MIRROR_NAME = ".repo"


def mirror_path(paths: SitePaths) -> str:
    return posixpath.join(paths.deployments, MIRROR_NAME)
