"""The state database's rows as they cross the `Store` boundary: typed records, one per table,
so a misspelt column is a type error (mypy --strict), not a silent None. Their keys are the
tables' columns (engine/store.py's migrations); SQLite gives None for a column never set."""

from __future__ import annotations

from typing import TypedDict


class SiteRow(TypedDict):
    domain: str
    server: str | None
    base_path: str | None
    sync: str | None
    health: str | None
    message: str | None
    pinned: str | None
    active_release: str | None
    active_commit: str | None
    desired_commit: str | None
    active_deployment_id: int | None
    last_deployment_sha: str | None
    last_deployed_at: str | None
    declarations_commit: str | None
    updated_at: str | None
    reload_owed: str | None
    reload_owed_reason: str | None


class DeploymentRow(TypedDict):
    id: int
    site: str
    server: str | None
    release: str
    status: str
    commit_sha: str | None
    branch: str | None
    repository: str | None
    build_key: str | None
    deployment_script: str | None
    deployment_path: str | None
    log_file_path: str | None
    local_log: str | None
    declarations_commit: str | None
    started_at: str | None
    completed_at: str | None
    duration_ms: int | None
    message: str | None
    exit_status: int | None
    transient: int | None
    trigger: str | None
    requested_by: str | None
    forgiven: int | None
    commit_author: str | None
    commit_subject: str | None
    once: str | None  # script_once of the release: "pending" | "done" (its first server's row), else None


class ActivationRow(TypedDict):
    id: int
    site: str
    release: str
    previous: str | None
    at: str
    trigger: str
    requested_by: str | None


class RequestRow(TypedDict):
    site: str
    kind: str
    by: str
    at: str
    after: str | None


class SiteServerRow(TypedDict):
    site: str
    server: str
    active_release: str | None
    message: str | None
