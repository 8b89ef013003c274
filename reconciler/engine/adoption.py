"""Adoption: the servers are the truth. The deployment rows of a site are brought in line with
the releases its server holds, so a lost, older or half-written database costs nothing but
history that was already pruned (an existing BrokeForge fleet is adopted the same way)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.core.facts import SiteFacts
from reconciler.core.layout import parse_release
from reconciler.core.status import FINAL, UNFINISHED, DeployStatus
from reconciler.engine.store import Store, utcnow


def adopt(store: Store, domain: str, facts: SiteFacts, *, locked: bool = False, server: str | None = None,
          rows: Sequence[Mapping[str, Any]] | None = None) -> bool:
    """Bring the deployment rows in line with what the server holds (servers are the truth).

    With `locked` (we hold the site's lock, so nobody else is building it) rows still
    `pending`/`updating` belong to a dead process: they take the release's final status
    from its manifest, or become failed (interrupted). True when it wrote anything (a
    caller holding a snapshot of these rows must read again)."""
    before = store.db.conn.total_changes
    paths = facts.paths
    mine: list[dict[str, Any]]  # copies: the dead rows below are updated in place
    if rows is None or locked:
        where, args = store.scope(domain, server)
        mine = list(store.db["deployments"].rows_where(where, args))
    else:
        mine = [dict(r) for r in rows if server is None or r.get("server") == server]
    known = {row["release"]: row for row in mine}
    if locked:
        for name, dead in known.items():
            if dead["status"] not in UNFINISHED:
                continue
            found = facts.releases.get(name)
            final = found.manifest.status if found and found.manifest else None
            if final in FINAL:
                store.update_deployment(dead["id"], status=final)
                dead["status"] = final
            else:
                store.update_deployment(dead["id"], status=DeployStatus.FAILED, transient=1, completed_at=utcnow(),
                                       message="interrupted: the reconciler stopped during this deployment")
                dead["status"] = DeployStatus.FAILED
    with store.db.atomic():
        for name, release in facts.releases.items():
            row = known.get(name)
            manifest = release.manifest
            status = release.status if release.status in (*FINAL, DeployStatus.UPDATING) else DeployStatus.FAILED
            if row is None:
                store.db["deployments"].insert({  # type: ignore[union-attr]
                    "site": domain, "server": server, "release": name, "status": status,
                    "commit_sha": release.commit,
                    "branch": manifest.branch if manifest else None,
                    "repository": manifest.repository if manifest else None,
                    "build_key": manifest.build_key if manifest else None,
                    "deployment_path": paths.release(name),
                    "log_file_path": paths.log(name),
                    "declarations_commit": manifest.declarations_commit if manifest else None,
                    "started_at": (manifest.started_at if manifest else "") or _release_time(name),
                    "completed_at": manifest.completed_at if manifest else None,
                    "message": manifest.message if manifest else "adopted from the server",
                    "commit_author": manifest.author if manifest else None,
                    "commit_subject": manifest.subject if manifest else None,
                    "transient": 0,
                    "once": (manifest.once or None) if manifest else None,
                })
                continue
            # Only a final manifest status (success/failed) overrides a row: an `updating`
            # manifest may be a dead build that the row already records as interrupted.
            final = manifest.status if manifest and manifest.status in FINAL else None
            if row["deployment_path"] is None or (final and row["status"] != final
                                                  and row["status"] not in UNFINISHED):
                store.update_deployment(row["id"], deployment_path=paths.release(name),
                                       status=final or row["status"])
        if facts.provisioned:
            for name, row in known.items():
                if name not in facts.releases and row["deployment_path"] is not None \
                        and row["status"] not in (DeployStatus.PENDING,):
                    store.update_deployment(row["id"], deployment_path=None)
    return store.db.conn.total_changes != before


def _release_time(name: str) -> str:
    moment = parse_release(name)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else ""
