"""The manifest: the small JSON record a release carries beside its deployment.log.

It is what the server knows about a release (commit, build key, status), so the database can
be rebuilt from the servers. Reading it is reading untrusted input: `Manifest.parse` goes
through the bounded decoder of `core.wire` and checks every field's type and shape; strings
that may reach a terminal are stored escaped (`wire.printable`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from reconciler.core import wire
from reconciler.core.status import DeployStatus

# What a manifest's status can be (a deployment's `pending` never reaches the server).
STATUSES: tuple[str, ...] = (DeployStatus.UPDATING, DeployStatus.SUCCESS, DeployStatus.FAILED)
ONCE_PENDING, ONCE_DONE = "pending", "done"
ONCE_STATES: tuple[str, ...] = ("", ONCE_PENDING, ONCE_DONE)
_BUILD_KEY_RE = re.compile(r"[0-9A-Za-z._-]{1,128}")


@dataclass(frozen=True)
class Manifest:
    """The record a release carries beside its deployment.log; the database is rebuilt from it."""

    commit: str
    # The branch a branch site's release was built from; for a tag or commit site `tag <name>` or
    # `commit <sha>` (SiteRef.record: a space, so never a branch name). One field, so the store's
    # `branch` column and a database rebuilt from manifests say which ref a release came from.
    branch: str
    repository: str
    build_key: str
    status: str  # updating | success | failed
    started_at: str = ""
    completed_at: str = ""
    declarations_commit: str = ""
    message: str = ""
    author: str = ""   # the commit's author and subject (history and notifications)
    subject: str = ""
    # A site with `script_once`: "pending" from the build until the run-once step succeeded on the
    # first server, then "done" there (a failure marks the release failed). "" for a site without
    # it, and for releases built before this field: those are trusted as they are. A release whose
    # first server says "pending" is never switched to and never offered for rollback.
    once: str = ""

    def to_json(self) -> str:
        # `once` only where it says something: a site without `script_once` writes what it always did.
        fields = {k: v for k, v in self.__dict__.items() if k != "once" or v}
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))

    @classmethod
    def parse(cls, text: str) -> Manifest:
        """The manifest `text` holds. Raises `wire.WireLimit` when it is too large or too deep
        to read at all, `wire.WireError` (with the reason) when it is not a valid manifest."""
        data = wire.decode_json_object(text)

        def text_field(key: str, required: bool = False) -> str:
            if key not in data:
                if required:
                    raise wire.WireError(f"{key} is missing")
                return ""
            value = wire.as_str(data[key])
            if value is None:
                raise wire.WireError(f"{key} is not a string")
            return wire.printable(value)

        commit = wire.as_sha(data.get("commit"))
        if commit is None:
            raise wire.WireError("commit is not a full hex commit id")
        build_key = data.get("build_key")
        if not isinstance(build_key, str) or not _BUILD_KEY_RE.fullmatch(build_key):
            raise wire.WireError("build_key is not a build key")
        status = data.get("status")
        if status not in STATUSES:
            raise wire.WireError("status is not one of " + ", ".join(STATUSES))
        declarations_commit = data.get("declarations_commit", "")
        if declarations_commit != "" and wire.as_sha(declarations_commit) is None:
            raise wire.WireError("declarations_commit is not a full hex commit id")
        once = data.get("once", "")
        if once not in ONCE_STATES:
            raise wire.WireError("once is not one of " + ", ".join(repr(o) for o in ONCE_STATES))
        return cls(commit, text_field("branch", True), text_field("repository", True), build_key, str(status),
                   text_field("started_at"), text_field("completed_at"), str(declarations_commit),
                   text_field("message"), wire.display(text_field("author"), wire.MAX_COMMIT_TEXT),
                   wire.display(text_field("subject"), wire.MAX_COMMIT_TEXT), str(once))

    @property
    def once_owed(self) -> bool:
        """The release's run-once step (migrations) has not succeeded: it must not go live."""
        return self.once == ONCE_PENDING

    @classmethod
    def from_json(cls, text: str) -> Manifest | None:
        """The manifest `text` holds, or None when it is not one (whatever `text` is)."""
        try:
            return cls.parse(text)
        except wire.WireError:
            return None
