"""The JSON shapes of `status` and `history` (README "Everyday commands").

One place builds them so the CLI and the HTTP API cannot drift apart; `cli.render` turns
them into terminal text. Light on purpose (no pydantic, sqlite-utils or pygit2 at import):
`status` and `history` build them from a plain-sqlite3 reader (`engine.state_reader`) and
from `Declared` summaries the CLI may have remembered (`engine.memo`), so they start at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from reconciler.core.shard import Shard
from reconciler.core.siteref import SiteRef
from reconciler.core.status import DeployStatus, Health, Sync

if TYPE_CHECKING:
    from reconciler.core.declarations import Declarations


class StateReads(Protocol):
    """The queries the views make: `engine.store.Store` and `engine.state_reader.StateReader`."""

    def site(self, domain: str) -> dict[str, Any] | None: ...
    def sites(self) -> dict[str, dict[str, Any]]: ...
    def observations(self) -> dict[str, str]: ...
    def site_servers(self, domain: str) -> list[dict[str, Any]]: ...
    def activations(self, domain: str) -> list[dict[str, Any]]: ...
    def deployments(self, domain: str) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Declared:
    """What status shows of one declaration: plain data, derived from a validated one (`declared`)."""

    shown_server: str         # the SERVER column: every target, or an invalid file's `server`
    server: str               # the first target (single-server rows); "" for an invalid file
    pin: str | None
    ref: str | None           # SiteRef.describe(): "branch main", "tag v1.4.2"
    invalid: str | None       # why the file is Invalid; None for a valid site


def declared(decls: Declarations) -> dict[str, Declared]:
    """Each declared domain (valid or not) as status shows it."""
    result = {domain: Declared(", ".join(site.targets), site.server, site.pin, site.ref.describe(), None)
              for domain, site in decls.sites.items()}
    result.update({domain: Declared(bad.server, "", None, None, bad.message) for domain, bad in decls.invalid.items()})
    return result


def site_views(store: StateReads, decls: Declarations | None, shard: Shard | None = None) -> list[dict[str, Any]]:
    """Every declared site (or every known site when declarations cannot be read). With a
    `shard` of several, a site of another shard is listed as skipped, saying whose it is."""
    return declared_views(store, declared(decls) if decls is not None else None, shard)


def declared_views(store: StateReads, sites: dict[str, Declared] | None,
                   shard: Shard | None = None) -> list[dict[str, Any]]:
    """`site_views` from summaries: every declared site, or every known one without `sites`."""
    shard = shard or Shard()
    rows = store.sites()
    observed = store.observations()
    domains = sorted(sites) if sites is not None else sorted(rows)
    views = []
    for domain in domains:
        row = rows.get(domain, {})
        entry = sites.get(domain) if sites is not None else None
        valid = entry if entry is not None and entry.invalid is None else None
        view: dict[str, Any] = {
            "domain": domain,
            "server": entry.shown_server if entry is not None else row.get("server") or "",
            "sync": row.get("sync") or Sync.UNKNOWN,
            "health": row.get("health") or Health.UNKNOWN,
            "pinned": valid.pin if valid else row.get("pinned"),
            "active_release": row.get("active_release"),
            "active_commit": row.get("active_commit"),
            "desired_commit": row.get("desired_commit"),
            "last_deployed_at": row.get("last_deployed_at"),
            "message": row.get("message") or ("" if row else "not reconciled yet"),
            # Beyond SPEC's keys: when this site's server was last probed (how old these facts are),
            # and what the site deploys from: "branch main", "tag v1.4.2", "commit 0123456789ab".
            "observed_at": observed.get(row.get("server") or ""),
            "ref": valid.ref if valid else None,
            # ... and each of its servers: the live release there and why it is not in step.
            "servers": _servers_of(store, domain, row, valid),
        }
        # The servers deciding the shard: a valid site's targets, an invalid file's `server`.
        targets = (tuple(entry.shown_server.split(", ")) if entry is not None
                   else tuple(str(row.get("server") or "").split(", ")))
        # Beyond SPEC's keys: the shard owning the site ("1/1" unsharded), and whether this
        # instance leaves it to another one.
        why = shard.skip_reason(targets)
        view.update(shard=f"{shard.owner_of(targets)}/{shard.count}", skipped=why is not None)
        if why is not None:
            # Whatever this database last saw of it (before a re-shard) is no longer looked after.
            view.update(sync=Sync.UNKNOWN, health=Health.UNKNOWN, message=why)
        elif entry is not None and entry.invalid is not None:
            view.update(sync=Sync.INVALID, message=entry.invalid)
        elif valid is not None and view["sync"] == Sync.SYNCED:
            _contradictions(view, valid.pin, row)
        views.append(view)
    return views


def _servers_of(store: StateReads, domain: str, row: dict[str, Any],
                declared: Declared | None) -> list[dict[str, Any]]:
    many = store.site_servers(domain)
    if many:
        return [{"server": r["server"], "active_release": r["active_release"], "message": r["message"] or ""}
                for r in many]
    server = declared.server if declared is not None else row.get("server") or ""
    in_step = row.get("sync") == Sync.SYNCED
    return [{"server": server, "active_release": row.get("active_release"),
             "message": "" if in_step else row.get("message") or ""}]


def in_step(view: dict[str, Any]) -> str:
    """`2/2 synced`: how many of a site's servers serve its live release with nothing to report."""
    servers = view.get("servers") or []
    if len(servers) <= 1:
        return f"{int(view['sync'] == Sync.SYNCED)}/1 synced"
    good = sum(1 for s in servers if s["active_release"] == view["active_release"] and not s["message"])
    return f"{good}/{len(servers)} synced"


def _contradictions(view: dict[str, Any], pin: str | None, row: dict[str, Any]) -> None:
    """A stored `Synced` that the declarations applied now contradict (a pin committed, or removed,
    with no pass since: a CLI rollback without a daemon) is shown as OutOfSync, saying why."""
    active, recorded = row.get("active_release"), row.get("pinned")
    if pin is not None and active != pin:
        view.update(sync=Sync.OUT_OF_SYNC, message=f"pinned to {pin} but {active or 'nothing'} is active: "
                                                   "not applied yet (the next pass switches)")
    elif pin is None and recorded:
        view.update(sync=Sync.OUT_OF_SYNC, message=f"unpinned, still on {active or 'nothing'}: not applied yet "
                                                   "(the next pass follows the branch again)")


def history_views(store: StateReads, domain: str) -> list[dict[str, Any]]:
    site = store.site(domain) or {}
    active_id = site.get("active_deployment_id")
    active_release = site.get("active_release")
    switched: dict[str, list[dict[str, Any]]] = {}
    for event in store.activations(domain):
        switched.setdefault(event["release"], []).append({
            "at": event["at"], "previous": event["previous"], "trigger": event["trigger"] or "",
            "requested_by": event["requested_by"] or ""})
    views = []
    for row in store.deployments(domain):
        is_active = row["id"] == active_id or (active_id is None and row["release"] == active_release)
        # The row's `branch` column holds SiteRef.record: a branch name, or "tag T" / "commit C".
        ref = SiteRef.from_record(row["branch"])
        views.append({
            "id": row["id"],
            "release": row["release"],
            "status": row["status"],
            "commit_sha": row["commit_sha"],
            # The branch of a branch site's build; null for a tag or commit site's (see `ref`).
            "branch": ref.name if ref is not None and ref.kind == "branch" else None,
            "deployment_path": row["deployment_path"],
            "log_file_path": row["log_file_path"],
            "started_at": row["started_at"],
            "completed_at": row["completed_at"],
            "duration_ms": row["duration_ms"],
            "is_active": bool(is_active),
            "can_rollback": row["status"] == DeployStatus.SUCCESS and row["deployment_path"] is not None
            and not is_active,
            # Beyond SPEC's keys: what it was built from, why it failed, and what asked for it.
            "ref": ref.describe() if ref is not None else None,
            "server": row.get("server") or "",
            "message": row.get("message") or "",
            "exit_status": row.get("exit_status"),
            "trigger": row.get("trigger") or "",
            "requested_by": row.get("requested_by") or "",
            "commit_author": row.get("commit_author") or "",
            "commit_subject": row.get("commit_subject") or "",
            # Later switches back to this release without a build (rollback, unpin, drift), newest first.
            "activations": switched.get(row["release"], []),
        })
    return views
