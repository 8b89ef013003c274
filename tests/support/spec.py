"""Shapes SPEC §5 fixes for `status --json` and `history --json`: the tests' oracle, so written
out here rather than imported from the product."""

from __future__ import annotations

SPEC_STATUS_KEYS = frozenset({"domain", "server", "sync", "health", "pinned", "active_release", "active_commit",
                              "desired_commit", "last_deployed_at", "message"})
# SPEC's keys kept; when the server was last probed, and what the site deploys from ("branch main",
# "tag v1.4.2", "commit 0123456789ab"), each server's state, and the owning shard and whether this
# instance skips the site (sharding; "1/1" and false unsharded).
STATUS_KEYS = SPEC_STATUS_KEYS | {"observed_at", "ref", "servers", "shard", "skipped"}
SPEC_HISTORY_KEYS = frozenset({"id", "release", "status", "commit_sha", "branch", "deployment_path",
                               "log_file_path", "started_at", "completed_at", "duration_ms", "is_active",
                               "can_rollback"})
# SPEC's keys are kept; these are the compatible additions (history explains itself; one entry per
# release, each server's result in `servers`, SPEC §8).
HISTORY_KEYS = SPEC_HISTORY_KEYS | {"message", "exit_status", "trigger", "requested_by", "commit_author",
                                   "commit_subject", "activations", "ref", "server", "servers"}
