"""Recording: what the engine remembers between passes, in the state database. A site's row after
a rollout (its servers' rows too), the failures a rollout must not retry, an owed reload, why a
release went live without a build and who asked.

Writes here never fail a site: a store that fails is logged, and the outcome still returned.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.core.declarations import SiteDeclaration
from reconciler.core.facts import SiteFacts
from reconciler.core.plan import HEALTH_FAILED, Activate, Deploy, FailureMemory
from reconciler.core.rollout import Rollout
from reconciler.core.status import DeployStatus, Health, Sync
from reconciler.engine import source
from reconciler.engine.outcome import SiteOutcome
from reconciler.engine.store import Snapshot, Store

log = logging.getLogger(__name__)

Board = dict[str, tuple[str | None, str]]  # server -> (its live release, why it is not in step)


def label(site: SiteDeclaration) -> str:
    """How a site's servers are shown where one server name goes (status, history, messages)."""
    return ", ".join(site.targets)


def failure_memory(store: Store, domain: str, facts: SiteFacts, server: str | None = None,
                   rows: Sequence[Mapping[str, Any]] | None = None) -> FailureMemory:
    """Failures remembered in the store and in failed manifests on the server, less those an
    operator forgave (`retry`); those of them whose build succeeded and only the health check
    failed are to be checked again. `rows`: the site's deployment rows already read (a snapshot)."""
    failed: dict[tuple[str, str], str] = {}
    rechecks: set[str] = set()
    if rows is None:
        forgiven = store.forgiven(domain, server)
        remembered = list(store.failures(domain, server))
    else:
        mine = [r for r in rows if server is None or r.get("server") == server]
        forgiven = {r["release"] for r in mine if r.get("forgiven")}
        remembered = [(r["commit_sha"], r["build_key"], r["message"] or "deployment failed") for r in mine
                      if r["status"] == DeployStatus.FAILED and not r.get("transient") and not r.get("forgiven")
                      and r["commit_sha"] and r["build_key"]]
    for release in facts.releases.values():
        manifest = release.manifest
        if manifest is None or manifest.status != DeployStatus.FAILED:
            continue
        if release.name not in forgiven:
            failed[(manifest.commit, manifest.build_key)] = manifest.message or "deployment failed"
        elif manifest.message.startswith(HEALTH_FAILED):
            rechecks.add(release.name)
    for commit, key, message in remembered:
        failed[(commit, key)] = message
    return FailureMemory(failed, frozenset(rechecks))


def reloaded(store: Store, domain: str, release: str, warnings: list[str]) -> tuple[Health, str]:
    """Health after a switch's (or a retried) reload; a failure is owed a retry until it succeeds
    (per site: the retry reloads every server, which a graceful reload such as FPM's takes in its
    stride)."""
    if warnings:
        warning = "; ".join(warnings)
        store.owe_reload(domain, release, warning)
        return Health.DEGRADED, f"{warning}; the reload is retried until it succeeds"
    store.owe_reload(domain, None)
    return Health.HEALTHY, ""


def author(repo: Any, commit: str | None) -> str:
    """The author of a declarations commit, for history; never a reason to fail a switch."""
    try:
        return source.author_of(repo, commit) if commit else ""
    except Exception:
        return ""


def live_after(outcome: SiteOutcome) -> str | None:
    """The release the last switch of this round made live (a deploy, an activation, or the
    switch back after a failed health check), if any switch happened."""
    for applied in reversed(outcome.applied):
        action = applied.action
        if isinstance(action, Activate | Deploy) and not applied.failed and not applied.superseded:
            return action.release
    return None


def record(store: Store, site: SiteDeclaration, outcome: SiteOutcome, decl_commit: str | None, notice: str, *,
           rollout: Rollout | None = None, facts: Mapping[str, SiteFacts] | None = None,
           board: Board | None = None, snapshot: Snapshot | None = None) -> None:
    """Write a site's outcome to the store: its row, and for a site on many servers each server's
    live release and why it is not in step. Logged, never raised."""
    try:
        _write(store, site, outcome, decl_commit, notice, rollout, facts, board, snapshot)
    except Exception:
        log.exception("%s: could not record the outcome", site.domain)


def _write(store: Store, site: SiteDeclaration, outcome: SiteOutcome, decl_commit: str | None, notice: str,
           rollout: Rollout | None, facts: Mapping[str, SiteFacts] | None, board: Board | None,
           snapshot: Snapshot | None) -> None:
    current = snapshot.sites.get(site.domain) if snapshot is not None else None
    many = len(site.targets) > 1
    known = store.site_servers(site.domain)
    gone = [r["server"] for r in known if r["server"] not in site.targets or not many]
    removed = [server for server in gone if server not in site.targets]
    if gone:
        store.forget_site_servers(site.domain, gone)
    if removed:
        log.warning("%s: %s no longer in servers: its files there are left alone", site.domain, ", ".join(removed))
    if many and board:
        store.set_site_servers(site.domain, board)
    note = f"{', '.join(removed)} removed from servers: its files there are left alone" if removed else ""
    values: dict[str, object] = {
        "server": label(site), "base_path": site.base_path, "sync": outcome.sync,
        "health": outcome.health, "pinned": site.pin,
        "message": "; ".join(m for m in (notice, outcome.message, note) if m),
        "declarations_commit": decl_commit,
    }
    first = site.targets[0]
    seen = facts.get(first) if facts is not None else None
    if rollout is None or seen is None:
        store.update_site(site.domain, current, **values)
        return
    values["desired_commit"] = rollout.desired_commit
    # What is live now: the desired release when we got there (even if a later step then
    # failed), else what the board says the first server serves (a release that failed its
    # check with nothing to return to stays live), else what the probe saw.
    on_board = board.get(first) if board else None
    active = live_after(outcome) or (rollout.desired_release if outcome.sync == Sync.SYNCED
                                     else on_board[0] if on_board is not None else seen.active_release)
    if snapshot is not None:
        row = next((r for r in snapshot.deployments.get(site.domain, [])
                    if r["release"] == active and r.get("server") == first), None) if active else None
    else:
        row = store.by_release(site.domain, active, first) if active else None
    values.update(active_release=active, active_deployment_id=row["id"] if row else None,
                  active_commit=row["commit_sha"] if row else None)
    if row is not None and row["status"] == DeployStatus.SUCCESS:
        had: Mapping[str, Any] = current if current is not None else store.site(site.domain) or {}
        if not had.get("last_deployed_at"):
            values.update(last_deployed_at=row["completed_at"] or row["started_at"],
                          last_deployment_sha=row["commit_sha"])
    store.update_site(site.domain, current, **values)
