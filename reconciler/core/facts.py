"""Facts: what one server holds for every declared site on it, as plain data.

`remote.probe` gathers them with one command per server and `remote.protocol.probing` parses its output strictly;
the planner reads them. Pure: no I/O.

A datum of a site that cannot be trusted (a manifest too large or too deep to read, say) is
never an exception: it becomes that site's `problem`, and the planner leaves the site alone
(Unknown) until someone looks. Other sites on the server are not affected.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from reconciler.core.layout import SitePaths, sort_releases
from reconciler.core.manifest import Manifest

MAX_PROBLEMS = 3


@dataclass
class ReleaseFacts:
    name: str
    manifest: Manifest | None = None
    head: str | None = None  # HEAD of a release without a manifest (adopted from elsewhere)
    corrupt: bool = False

    @property
    def commit(self) -> str | None:
        return self.manifest.commit if self.manifest else self.head

    @property
    def status(self) -> str:
        """success | failed | updating | unknown. An adopted release with a HEAD counts as success."""
        if self.manifest is not None:
            return self.manifest.status
        return "success" if self.head else "unknown"


@dataclass
class SiteFacts:
    domain: str
    base_path: str
    link_target: str | None = None
    path_kind: str = "missing"  # missing | symlink | dir | file
    dangling: bool = False
    provisioned: bool = False
    shared: bool = False
    lock: str | None = None
    releases: dict[str, ReleaseFacts] = field(default_factory=dict)
    not_dirs: list[str] = field(default_factory=list)
    unlinked: list[str] = field(default_factory=list)  # shared entries not a symlink in the live release
    env_digest: str | None = None  # sha256 of shared/.env, when the probe was asked (ProbeSite.env) and it exists
    problem: str | None = None  # set: a datum could not be trusted; the site is left alone
    _problems: int = field(default=0, repr=False, compare=False)

    def note_problem(self, text: str) -> None:
        """Record why this site's facts cannot be trusted (the first few reasons are kept)."""
        self._problems += 1
        if self.problem is None:
            self.problem = text
        elif self._problems <= MAX_PROBLEMS:
            self.problem += "; " + text
        elif self._problems == MAX_PROBLEMS + 1:
            self.problem += "; and more"

    @functools.cached_property  # domain and base path never change (a pass asks several times)
    def paths(self) -> SitePaths:
        return SitePaths(self.base_path, self.domain)

    @property
    def active_release(self) -> str | None:
        if self.link_target is None or self.dangling:
            return None
        name = self.paths.release_from_target(self.link_target)
        return name if name in self.releases else None

    def ordered(self) -> list[ReleaseFacts]:
        """Releases oldest first by the time their names encode."""
        return [self.releases[name] for name in sort_releases(self.releases)]


@dataclass(frozen=True)
class BranchHead:
    """The commit a probed ref points at (a branch's head, or a tag's commit: an annotated tag
    is peeled), or why it could not be resolved."""

    sha: str | None
    error: str | None = None
    # The repository's host did not answer, or refused (git ls-remote failed or was cut off),
    # as opposed to answering without the ref: the cause on-call hears of as `unreachable`.
    unreachable: bool = False


@dataclass
class ServerFacts:
    sites: dict[str, SiteFacts] = field(default_factory=dict)
    # By (repository, full ref): `refs/heads/<branch>` or `refs/tags/<tag>` (SiteDeclaration.head_key).
    heads: dict[tuple[str, str], BranchHead] = field(default_factory=dict)


@dataclass(frozen=True)
class ProbeSite:
    domain: str
    base_path: str
    shared: tuple[str, ...] = ()  # entries whose link in the live release the probe checks
    env: bool = False  # the site has an env file: the probe reports the digest of shared/.env
