"""The JSON shapes of `status` and `history` (docs/guide/commands.md).

One place builds them so the CLI and the HTTP API cannot drift apart; `cli.render` turns
them into terminal text. Light on purpose (no pydantic, sqlite-utils or pygit2 at import):
`status` and `history` build them from a plain-sqlite3 reader (`engine.state_reader`) and
from `Declared` summaries the CLI may have remembered (`engine.memo`), so they start at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from reconciler.core.layout import parse_release
from reconciler.core.reasons import DeployReason
from reconciler.core.shard import Shard
from reconciler.core.siteref import SiteRef
from reconciler.core.status import DeployStatus, Health, Sync

if TYPE_CHECKING:
    from reconciler.core.declarations import Declarations
    from reconciler.engine.rows import ActivationRow, DeploymentRow, SiteRow, SiteServerRow


# core.manifest.ONCE_PENDING, written out: importing the manifest module costs `status` 0.1 s.
ONCE_PENDING = "pending"
R = TypeVar("R", bound=Mapping[str, Any])  # a row of any table, handed back as it came


class StateReads(Protocol):
    """The queries the views make: `engine.store.Store` and `engine.state_reader.StateReader`."""

    def site(self, domain: str) -> SiteRow | None: ...
    def sites(self) -> dict[str, SiteRow]: ...
    def observations(self) -> dict[str, str]: ...
    def site_servers(self, domain: str) -> list[SiteServerRow]: ...
    def activations(self, domain: str) -> list[ActivationRow]: ...
    def deployments(self, domain: str) -> list[DeploymentRow]: ...
    def latest_deployment(self, domain: str) -> DeploymentRow | None: ...
    def release_rows(self, domain: str, release: str) -> list[DeploymentRow]: ...


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
        row: Mapping[str, Any] = rows.get(domain) or {}
        entry = sites.get(domain) if sites is not None else None
        valid = entry if entry is not None and entry.invalid is None else None
        many = in_order(store.site_servers(domain), entry.shown_server if entry is not None else row.get("server"))
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
            "servers": _servers_of(many, row, valid),
        }
        if many:
            _many_servers(store, view, row, many, observed)
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


def in_order(many: Sequence[R], label: str | None) -> list[R]:
    """A site's per-server rows (`site_servers`, kept in the order a pass happened to write them)
    in the order its servers are declared: `label` lists them ("web-1, web-2")."""
    declared = (label or "").split(", ")
    return sorted(many, key=lambda r: declared.index(r["server"]) if r["server"] in declared else len(declared))


def _servers_of(many: Sequence[Mapping[str, Any]], row: Mapping[str, Any], declared: Declared | None
                ) -> list[dict[str, Any]]:
    if many:
        return [{"server": r["server"], "active_release": r["active_release"], "message": r["message"] or ""}
                for r in many]
    server = declared.server if declared is not None else row.get("server") or ""
    in_step = row.get("sync") == Sync.SYNCED
    return [{"server": server, "active_release": row.get("active_release"),
             "message": "" if in_step else row.get("message") or ""}]


def _many_servers(store: StateReads, view: dict[str, Any], row: Mapping[str, Any], many: Sequence[Mapping[str, Any]],
                  observed: dict[str, str]) -> None:
    """What a site on many servers does not keep in its own row, read from the rows it does
    keep (as one server's pass writes them): when its servers were observed, when the live
    release went live, and the commit it wants."""
    domain = view["domain"]
    # The oldest of its servers' probes (how old the facts may be); never, while one never answered.
    seen = [observed.get(r["server"]) for r in many]
    view["observed_at"] = min(s for s in seen if s) if all(seen) else None
    active = view["active_release"]
    if active:
        view["last_deployed_at"] = _went_live(store, domain, active, row.get("last_deployed_at"))
    if view["desired_commit"] is None:
        view["desired_commit"] = _desired_commit(store, domain, view)


def _went_live(store: StateReads, domain: str, release: str, recorded: str | None) -> str | None:
    """When `release` last went live: its build finishing (a build switches when it finished
    everywhere), a later switch to it without a build (an activation), or what the site's row
    recorded, whichever is the latest (UTC ISO times compare as text)."""
    times = [recorded] if recorded else []
    times += [r["completed_at"] for r in store.release_rows(domain, release)
              if r["status"] == DeployStatus.SUCCESS and r["completed_at"]]
    times += [a["at"] for a in store.activations(domain) if a["release"] == release and a["at"]]
    return max(times) if times else None


def _desired_commit(store: StateReads, domain: str, view: dict[str, Any]) -> str | None:
    """The commit a pass wants: the pinned release's; the live one's while in step; else the
    one the newest build set out to deploy (a failed or running build of the followed ref)."""
    pin = view["pinned"]
    if pin:
        return next((r["commit_sha"] for r in store.release_rows(domain, pin) if r["commit_sha"]), None)
    if view["sync"] == Sync.SYNCED and view["active_commit"]:
        return str(view["active_commit"])
    newest = store.latest_deployment(domain)
    return newest["commit_sha"] if newest is not None else None


def in_step(view: dict[str, Any]) -> str:
    """`2/2 synced`: how many of a site's servers serve its live release with nothing to report."""
    servers = view.get("servers") or []
    if len(servers) <= 1:
        return f"{int(view['sync'] == Sync.SYNCED)}/1 synced"
    good = sum(1 for s in servers if server_in_step(s, view["active_release"]))
    return f"{good}/{len(servers)} synced"


def server_in_step(server: Mapping[str, Any], live: str | None) -> bool:
    """A server of a site on many (a `site_servers` row, a status view's `servers` entry) serves
    the site's live release `live` with nothing to report."""
    return bool(server["active_release"] == live and not server["message"])


def _contradictions(view: dict[str, Any], pin: str | None, row: Mapping[str, Any]) -> None:
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
    """`history --json`: one entry per release, newest first, with each server's result in
    `servers` (one element on a site of one server). A site on many servers has a row per server
    of each release (the builds are per server); its entry is what they say together."""
    site: Mapping[str, Any] = store.site(domain) or {}
    many = in_order(store.site_servers(domain), site.get("server"))
    # The site's servers in their declared order (its row's label lists them), and the release
    # live on each (a site on many servers keeps each server's; else the site's).
    live: dict[str, str | None] = {r["server"]: r["active_release"] for r in many}
    for server in (n for n in str(site.get("server") or "").split(", ") if n):
        live.setdefault(server, site.get("active_release"))  # one just added has no row of its own yet
    switched = _switches(store.activations(domain), merge=len(live) > 1)
    releases: dict[str, list[DeploymentRow]] = {}
    for row in store.deployments(domain):  # newest first: a release takes the place of its newest row
        releases.setdefault(row["release"], []).append(row)
    entries = [_entry(group, site, live, switched.get(release, [])) for release, group in releases.items()]
    _name_generic_causes(entries)
    return entries


def _entry(group: list[DeploymentRow], site: Mapping[str, Any], live: dict[str, str | None],
           switched: list[dict[str, Any]]) -> dict[str, Any]:
    """One release's entry from its rows (one per server that built it)."""
    order = list(live)
    group = sorted(group, key=lambda r: (order.index(r["server"]) if r["server"] is not None and r["server"] in order
                                         else len(order), r["id"]))
    head = group[0]  # the first listed server's row: its id, paths and commit stand for the release
    first = min(group, key=lambda r: (r["started_at"] or "", r["id"]))  # the attempt that started it
    active_id = site.get("active_deployment_id")
    is_active = any(r["id"] == active_id for r in group) or (
        active_id is None and head["release"] == site.get("active_release"))
    failed = [r for r in group if r["status"] == DeployStatus.FAILED]
    done = [r["completed_at"] for r in group]
    durations = [r["duration_ms"] for r in group if r["duration_ms"] is not None]
    # The row's `branch` column holds SiteRef.record: a branch name, or "tag T" / "commit C".
    ref = SiteRef.from_record(head["branch"])
    return {
        "id": head["id"],
        "release": head["release"],
        "status": _status(group),
        "commit_sha": head["commit_sha"],
        # The branch of a branch site's build; null for a tag or commit site's (see `ref`).
        "branch": ref.name if ref is not None and ref.kind == "branch" else None,
        "deployment_path": head["deployment_path"] if all(r["deployment_path"] for r in group) else None,
        "log_file_path": head["log_file_path"],
        "started_at": first["started_at"],
        "completed_at": max(d for d in done if d is not None) if all(done) else None,
        # The builds run in parallel: the release took as long as its slowest server.
        "duration_ms": max(durations) if durations else None,
        "is_active": is_active,
        "can_rollback": not is_active and _pinnable_everywhere(group, live),
        # Beyond SPEC's keys: what it was built from, why it failed, and what asked for it.
        "ref": ref.describe() if ref is not None else None,
        "server": ", ".join(r.get("server") or "" for r in group),
        "message": _said(failed or group, group),
        "exit_status": (failed or [head])[0].get("exit_status"),
        "trigger": first.get("trigger") or "",
        "requested_by": first.get("requested_by") or "",
        "commit_author": head.get("commit_author") or "",
        "commit_subject": head.get("commit_subject") or "",
        # Later switches back to this release without a build (rollback, unpin, drift), newest first.
        "activations": switched,
        # Each server's own result: the release was built on each.
        "servers": [{
            "server": r.get("server") or "",
            "id": r["id"],
            "status": r["status"],
            "started_at": r["started_at"],
            "completed_at": r["completed_at"],
            "duration_ms": r["duration_ms"],
            "message": r.get("message") or "",
            "exit_status": r.get("exit_status"),
            "deployment_path": r["deployment_path"],
            "log_file_path": r["log_file_path"],
            "trigger": r.get("trigger") or "",
            "requested_by": r.get("requested_by") or "",
            "is_active": live.get(r.get("server") or "") == r["release"] if len(live) > 1 else is_active,
        } for r in group],
    }


def _status(group: Sequence[DeploymentRow]) -> str:
    """A release's status on all its servers: success only when it succeeded on every one,
    failed when it failed on any, else the step it is at (it is still being built somewhere)."""
    statuses = {r["status"] for r in group}
    if statuses == {DeployStatus.SUCCESS}:
        return DeployStatus.SUCCESS
    for status in (DeployStatus.FAILED, DeployStatus.UPDATING, DeployStatus.PENDING):
        if status in statuses:
            return status
    return str(group[0]["status"])


def _said(shown: Sequence[DeploymentRow], group: Sequence[DeploymentRow]) -> str:
    """The message of `shown` rows (the failed ones, else all): on one server its own; on many
    the same words once when every server said them, else each server's, named."""
    if len(group) == 1:
        return str(group[0].get("message") or "")
    said = [(r.get("server") or "", r["message"]) for r in shown if r.get("message")]
    if len(said) == len(group) and len({message for _, message in said}) == 1:
        return str(said[0][1])
    return "; ".join(f"{server}: {message}" for server, message in said)


def _pinnable_everywhere(group: Sequence[DeploymentRow], live: dict[str, str | None]) -> bool:
    """SPEC's `can_rollback` on every server of the site: what `engine.actions.rollback_target`
    accepts on each server's facts, asked of the rows (a successful build of a release name,
    still on the server, not live there). A server of the site without a row of the release
    lacks it, and so does a release whose `script_once` never succeeded (`once` pending: a database
    from before m011 has no such column). (The action reads fresh facts and refuses what the rows
    could not know.) tests/properties/test_history_rollback.py holds this to the action's rule."""
    servers = live or {r.get("server") or "": None for r in group}  # no declared servers known: its own
    rows = {r.get("server") or "": r for r in group}
    return all((row := rows.get(server)) is not None and row["status"] == DeployStatus.SUCCESS
               and row["deployment_path"] is not None and parse_release(row["release"]) is not None
               and row.get("once") != ONCE_PENDING and row["release"] != on for server, on in servers.items())


def _name_generic_causes(entries: list[dict[str, Any]]) -> None:
    """Builds recorded with the generic `deploy` trigger (a site on many servers' executor did not
    say why) are named as the planner names a build: a first deploy, an app commit, a moved tag
    or a declaration change, judged against the successful release before it. `entries`: newest first."""
    for i, entry in enumerate(entries):
        if entry["trigger"] != DeployReason.DEPLOY or entry["requested_by"]:
            continue
        before = next((e for e in entries[i + 1:] if e["status"] == DeployStatus.SUCCESS), None)
        if before is None:
            cause = DeployReason.FIRST_DEPLOY
        elif before["commit_sha"] == entry["commit_sha"]:
            cause = DeployReason.DECLARATION
        elif entry["branch"] is not None:
            cause = DeployReason.APP_COMMIT
        elif (entry["ref"] or "").startswith("tag ") and before["ref"] == entry["ref"]:
            cause = DeployReason.TAG_MOVED
        else:
            cause = DeployReason.DECLARATION
        entry["trigger"] = str(cause)
        for result in entry["servers"]:
            if result["trigger"] == DeployReason.DEPLOY:
                result["trigger"] = str(cause)


MERGED_WITHIN = 60  # seconds: one rollout's switches of its servers, one after another


def _switches(events: Sequence[Mapping[str, Any]], merge: bool) -> dict[str, list[dict[str, Any]]]:
    """Activations by release, newest first. With `merge` (a site on many servers) one switch
    recorded once per server (the same release, previous release, cause and asker, moments
    apart: an automatic rollback switches each server back) is one event."""
    switched: dict[str, list[dict[str, Any]]] = {}
    last: Mapping[str, Any] | None = None
    for event in events:
        shown = {"at": event["at"], "previous": event["previous"], "trigger": event["trigger"] or "",
                 "requested_by": event["requested_by"] or ""}
        if merge and last is not None and _same_switch(last, event):
            continue
        last = event
        switched.setdefault(event["release"], []).append(shown)
    return switched


def _same_switch(newer: Mapping[str, Any], older: Mapping[str, Any]) -> bool:
    keys = ("release", "previous", "trigger", "requested_by")
    if any(newer[k] != older[k] for k in keys):
        return False
    apart = _seconds(newer["at"]) - _seconds(older["at"])
    return 0 <= apart <= MERGED_WITHIN


def _seconds(at: str | None) -> float:
    try:
        return datetime.strptime(at or "", "%Y-%m-%dT%H:%M:%SZ").timestamp()
    except ValueError:
        return float("nan")
