"""Release names and remote paths of the BrokeForge layout. Pure: no I/O, no clock.

    {base}/deployments/{domain}/shared/       shared entries
    {base}/deployments/{domain}/{release}/    one release: a full git work tree
    {base}/{domain} -> deployments/{domain}/{release}
"""

from __future__ import annotations

import functools
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from reconciler.errors import PermanentError

RELEASE_FORMAT = "%d%m%Y-%H%M%S"
_RELEASE_RE = re.compile(r"[0-9]{8}-[0-9]{6}")  # ASCII digits only: \d matches any script

# Files the reconciler writes inside a release beside the checkout.
LOG_NAME = "deployment.log"
MANIFEST_NAME = ".reconciler-release.json"


@functools.lru_cache(maxsize=65536)
def parse_release(name: str) -> datetime | None:
    """The UTC time a release name encodes, or None when it is not a release name. Cached: a
    pass asks about the same few names per site many times, and strptime dominated a no-op
    pass's CPU; the answer for a name never changes."""
    if not _RELEASE_RE.fullmatch(name):
        return None
    try:
        return datetime.strptime(name, RELEASE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def is_release(name: str) -> bool:
    return parse_release(name) is not None


def release_name(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(RELEASE_FORMAT)


def sort_releases(names: Iterable[str]) -> list[str]:
    """Release names oldest first, ordered by encoded time (ddMMYYYY does not sort as text)."""
    timed = [(t, n) for n in names if (t := parse_release(n)) is not None]
    return [n for _, n in sorted(timed)]


# The latest time a name can hold (ddMMYYYY has four year digits; datetime ends there too).
LAST_RELEASE_TIME = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


class NoLaterReleaseName(PermanentError):
    """Raised by `next_release_name` when a release is named with the last time a name can hold
    (`31129999-235959`, e.g. planted on the server): no name sorts after it, so a new release
    could never be the newest. Permanent: only removing that directory helps."""


def next_release_name(now: datetime, existing: Iterable[str]) -> str:
    """A fresh name, never older than or equal to any existing release, so newest is newest.
    NoLaterReleaseName when an existing release leaves no later name."""
    candidate = now.astimezone(UTC).replace(microsecond=0)
    timed = [(t, n) for n in existing if (t := parse_release(n)) is not None]
    if timed and (newest := max(timed))[0] >= candidate:
        if newest[0] >= LAST_RELEASE_TIME:
            # A name that parsed is digits and '-' only: safe to print.
            raise NoLaterReleaseName(f"release {newest[1]} is named with the last time a release name can "
                                     "hold, so no new release can sort after it; remove that directory "
                                     "to deploy again")
        candidate = newest[0] + timedelta(seconds=1)
    return release_name(candidate)


@dataclass(frozen=True)
class SitePaths:
    base_path: str
    domain: str

    @property
    def site_link(self) -> str:
        return posixpath.join(self.base_path, self.domain)

    @property
    def deployments(self) -> str:
        return posixpath.join(self.base_path, "deployments", self.domain)

    @property
    def shared(self) -> str:
        return posixpath.join(self.deployments, "shared")

    @property
    def lock(self) -> str:
        return posixpath.join(self.deployments, ".reconciler-lock")

    def release(self, name: str) -> str:
        return posixpath.join(self.deployments, name)

    def log(self, name: str) -> str:
        return posixpath.join(self.release(name), LOG_NAME)

    def manifest(self, name: str) -> str:
        return posixpath.join(self.release(name), MANIFEST_NAME)

    def link_target(self, name: str) -> str:
        """The relative target the site symlink holds for a release."""
        return posixpath.join("deployments", self.domain, name)

    def release_from_target(self, target: str) -> str | None:
        """The release a site symlink target points at, if it is one of ours."""
        return _release_from_target(self.base_path, self.domain, target)


@functools.lru_cache(maxsize=65536)  # every poll reads every site's (unchanged) link again
def _release_from_target(base_path: str, domain: str, target: str) -> str | None:
    target = target.rstrip("/")
    prefixes = (f"deployments/{domain}/", f"{SitePaths(base_path, domain).deployments}/", f"./deployments/{domain}/")
    for prefix in prefixes:
        if target.startswith(prefix):
            name = target[len(prefix):]
            return name if is_release(name) else None
    return None


def shared_link_target(entry: str) -> str:
    """Relative target of a shared link inside a release: storage -> ../shared/storage."""
    depth = len([part for part in entry.split("/") if part])
    return "../" * depth + "shared/" + entry.strip("/")
