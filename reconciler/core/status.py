"""The status vocabulary: sync, health, deployment status and deploy steps.

`StrEnum`s whose values are exactly the strings of the contract (JSON, database, metrics),
so `Sync.SYNCED == "Synced"` and stored rows need no migration. Code decides on these
members, never on message text.
"""

from __future__ import annotations

from enum import StrEnum


class Sync(StrEnum):
    """How a site's live state compares with its declaration."""

    SYNCED = "Synced"
    OUT_OF_SYNC = "OutOfSync"
    PROGRESSING = "Progressing"
    FAILED = "Failed"
    INVALID = "Invalid"
    UNKNOWN = "Unknown"


class Health(StrEnum):
    """Whether the site is served: its symlink resolves to a release we know."""

    HEALTHY = "Healthy"
    DEGRADED = "Degraded"
    MISSING = "Missing"
    UNKNOWN = "Unknown"


class DeployStatus(StrEnum):
    """A deployment's status in history and in a release's manifest."""

    PENDING = "pending"
    UPDATING = "updating"
    SUCCESS = "success"
    FAILED = "failed"


# A deployment that has ended, and one that has not (yet, or because its process died).
FINAL = (DeployStatus.SUCCESS, DeployStatus.FAILED)
UNFINISHED = (DeployStatus.PENDING, DeployStatus.UPDATING)


class Step(StrEnum):
    """The steps of changing a site, one vocabulary for progress, errors and fault checkpoints."""

    PROBE = "probe"
    LOCK = "lock"
    PROVISION = "provision"
    CLEAN = "clean"
    CLAIM = "claim release directory"
    CLONE = "clone"
    SHARED = "link shared entries"
    COPY = "copy from previous release"
    SCRIPT = "deploy script"
    RECORD = "record success"
    SWITCH = "switch"
    RELOAD = "reload"
    PRUNE = "prune"
    UNLOCK = "unlock"
