"""The "server" filesystem as tests see it: one site's link, release dirs and manifests.

The layout's names come from the product (reconciler.core.layout), never re-typed here.
"""

from __future__ import annotations

import json
import os
import posixpath
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.core.layout import MANIFEST_NAME, SitePaths, is_release, parse_release, sort_releases

# The per-site lock directory's name, as the product spells it.
LOCK_NAME = posixpath.basename(SitePaths("/", "example.com").lock)

__all__ = ["LOCK_NAME", "MANIFEST_NAME", "LinkSampler", "SiteOnDisk", "is_release", "release_time"]


def release_time(name: str) -> float:
    """Seconds since the epoch a release name encodes; 0 for a name that is not a release."""
    moment = parse_release(name)
    return moment.timestamp() if moment else 0.0


@dataclass(frozen=True)
class SiteOnDisk:
    """One site's layout on a server, read directly (local disk; the sshd "server" is this machine).

    By default an oracle: the site link must name one of our releases (relative SPEC form) and
    the live release's manifest must agree with its checkout, or the test fails. `tolerant=True`
    is for tests that plant junk or forged data on the server (tests/faults/blast_support.py):
    what is not the product's own then reads as absent (no active release, an empty manifest,
    no commit) and never breaks the observer."""

    base: Path
    domain: str
    tolerant: bool = False

    @property
    def link(self) -> Path:
        return self.base / self.domain

    @property
    def deployments(self) -> Path:
        return self.base / "deployments" / self.domain

    @property
    def lock(self) -> Path:
        return self.deployments / LOCK_NAME

    def release(self, name: str) -> Path:
        return self.deployments / name

    def releases(self) -> list[str]:
        """Release directories (not links to one), oldest first by the time the name encodes
        (junk names are skipped)."""
        if not self.deployments.is_dir():
            return []
        return sort_releases(p.name for p in self.deployments.iterdir() if p.is_dir() and not p.is_symlink())

    def active(self) -> str | None:
        """The release the site symlink points at (relative SPEC form), or None when absent
        (tolerant: also when the link is unreadable or names no release directory of ours)."""
        try:
            target = os.readlink(self.link)
        except FileNotFoundError:
            return None
        except OSError:
            if self.tolerant:
                return None
            raise
        prefix = f"deployments/{self.domain}/"
        name = target[len(prefix):] if target.startswith(prefix) else ""
        if self.tolerant:
            return name if name in self.releases() else None
        assert is_release(name), target
        return name

    def manifest(self, release: str) -> dict[str, Any]:
        """The release's manifest (tolerant: {} when it is missing, unreadable or no JSON object)."""
        try:
            data = json.loads((self.release(release) / MANIFEST_NAME).read_text())
        except (OSError, ValueError, RecursionError):
            if self.tolerant:
                return {}
            raise
        if self.tolerant and not isinstance(data, dict):
            return {}
        manifest: dict[str, Any] = data
        return manifest

    def commit_of(self, release: str) -> str | None:
        """The commit checked out in a release (tolerant: None when it is no git work tree)."""
        done = subprocess.run(["git", "-C", str(self.release(release)), "rev-parse", "HEAD"],
                              check=not self.tolerant, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    def live_commit(self) -> str | None:
        """The commit checked out in the active release, once that release is complete."""
        release = self.active()
        if release is None:
            return None
        manifest = self.manifest(release)
        if manifest.get("status") != "success":
            return None
        commit = self.commit_of(release)
        assert self.tolerant or manifest.get("commit") == commit, (manifest, commit)
        return commit


class LinkSampler:
    """Samples a site symlink from a thread: once it first exists it must always resolve."""

    def __init__(self, link: Path, period: float = 0.002) -> None:
        self.link = link
        self.period = period
        self.samples = 0
        self.failures: list[str] = []
        self.targets: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                target = os.readlink(self.link)
                os.stat(self.link)  # follows the link: must resolve to the release dir
                self.targets.add(target)
            except OSError as exc:
                self.failures.append(f"{exc.__class__.__name__}: {exc}")
            self.samples += 1
            time.sleep(self.period)

    def __enter__(self) -> LinkSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
