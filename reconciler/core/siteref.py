"""What a site deploys from (`SiteRef`): a branch, a tag or one commit, and how that is
recorded in a manifest's or a deployments row's `branch` field.

Plain data without pydantic, so readers of the state database (`status`, `history`) can decode
a row's ref without loading the declaration validators.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

COMMIT_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # a full SHA-1 or SHA-256 id, as git prints it


@dataclass(frozen=True)
class SiteRef:
    """What a site deploys from: the head of a branch, a tag (followed when it moves) or one
    commit (the declaration itself is the desired commit: nothing to resolve, nothing moves)."""

    kind: str  # "branch" | "tag" | "commit"
    name: str  # the branch or tag name, or the full commit id

    @property
    def git_ref(self) -> str | None:
        """The ref the probe resolves with `git ls-remote`; None for a commit."""
        if self.kind == "branch":
            return f"refs/heads/{self.name}"
        if self.kind == "tag":
            return f"refs/tags/{self.name}"
        return None

    def describe(self) -> str:
        """For status and history: "branch main", "tag v1.4.2", "commit 0123456789ab"."""
        return f"{self.kind} {self.name[:12] if self.kind == 'commit' else self.name}"

    @property
    def record(self) -> str:
        """What a release's manifest and its deployments row keep in their `branch` field: the
        branch name for a branch site (as always), else `tag <name>` or `commit <sha>`. A branch
        name never holds a space, so the field stays one column that cannot be misread, and a
        database rebuilt from manifests still knows which tag a release came from."""
        return self.name if self.kind == "branch" else f"{self.kind} {self.name}"

    @classmethod
    def from_record(cls, text: str | None) -> SiteRef | None:
        """The ref a manifest's or a row's `branch` field names (`record`); None when it names none
        (an adopted release without a manifest) or is not one we write."""
        if not text:
            return None
        kind, space, name = text.partition(" ")
        if not space:
            return cls("branch", text)
        if kind == "tag" and name:
            return cls("tag", name)
        if kind == "commit" and COMMIT_RE.fullmatch(name):
            return cls("commit", name)
        return None
