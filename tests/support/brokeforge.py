"""A server laid out by hand the BrokeForge way (not by the reconciler): per site
`deployments/<domain>/shared/`, releases that are plain `git clone`s with their shared entries
replaced by links into `../shared/`, and the site symlink on the live one. No manifest anywhere:
what `reconciler import` finds on a fleet that another tool built."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from tests.support.repos import git

LIVE = "01082025-091245"
OLDER = "31072025-143022"


def brokeforge_site(base: Path, domain: str, app: Path, releases: Sequence[str] = (LIVE,), *,
                    shared: Sequence[str] = ("storage", ".env"), live: str | None = None,
                    checkout: str | None = None, absolute: bool = False) -> Path:
    """Lay out `domain` under `base`: each of `releases` cloned from `app` (at `checkout` when
    given: a tag or commit, detached), `shared` entries linked, the site link on `live` (default:
    the last release; relative, or `absolute`). Returns the live release's directory."""
    deployments = base / "deployments" / domain
    (deployments / "shared").mkdir(parents=True, exist_ok=True)
    for name in releases:
        release = deployments / name
        git(base, "clone", "-q", str(app), str(release))
        if checkout is not None:
            git(release, "checkout", "-q", "--detach", checkout)
        for entry in shared:
            target = deployments / "shared" / entry
            if not target.exists():
                if entry.startswith("."):
                    target.write_text("")
                else:
                    target.mkdir()
            inside = release / entry
            if inside.is_dir() and not inside.is_symlink():
                shutil.rmtree(inside)  # the repository's copy (Laravel ships storage/): the link replaces it
            inside.symlink_to(f"../shared/{entry}")
    live_release = deployments / (live or releases[-1])
    link = base / domain
    link.symlink_to(live_release if absolute else Path("deployments") / domain / live_release.name)
    return live_release


def release_dirs(base: Path) -> dict[str, list[str]]:
    """Every site's release-named directories under `base`, by domain (to compare before/after)."""
    found: dict[str, list[str]] = {}
    deployments = base / "deployments"
    for site in sorted(deployments.iterdir()) if deployments.is_dir() else []:
        found[site.name] = sorted(p.name for p in site.iterdir() if p.is_dir() and p.name[:1].isdigit())
    return found
