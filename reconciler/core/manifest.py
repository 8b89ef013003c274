"""The manifest: the small JSON record a release carries beside its deployment.log.

It is what the server knows about a release (commit, build key, status), so the database can
be rebuilt from the servers. Parsing it is untrusted input: see `remote.probe` for the reader
that bounds and validates it before `Manifest` is built.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Manifest:
    """The record a release carries beside its deployment.log; the database is rebuilt from it."""

    commit: str
    branch: str
    repository: str
    build_key: str
    status: str  # updating | success | failed
    started_at: str = ""
    completed_at: str = ""
    declarations_commit: str = ""
    message: str = ""

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Manifest | None:
        try:
            data: Any = json.loads(text)
            known = {key: str(data[key]) for key in cls.__dataclass_fields__ if key in data}
            return cls(**known)
        except (ValueError, TypeError, KeyError):
            return None
