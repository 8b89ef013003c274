"""The SPEC section 5 JSON shapes of `status` and `history`, and a plain text table.

One place builds them so the CLI and (later) the HTTP API cannot drift apart.
"""

from __future__ import annotations

import os
from typing import Any, TextIO

from .declarations import Declarations
from .store import Store


def site_views(store: Store, decls: Declarations | None) -> list[dict[str, Any]]:
    """Every declared site (or every known site when declarations cannot be read)."""
    rows = store.sites()
    domains = sorted(set(decls.sites) | set(decls.invalid)) if decls is not None else sorted(rows)
    views = []
    for domain in domains:
        row = rows.get(domain, {})
        declared = decls.sites.get(domain) if decls is not None else None
        invalid = decls.invalid.get(domain) if decls is not None else None
        view: dict[str, Any] = {
            "domain": domain,
            "server": declared.server if declared else (invalid.server if invalid else row.get("server") or ""),
            "sync": row.get("sync") or "Unknown",
            "health": row.get("health") or "Unknown",
            "pinned": declared.pin if declared else row.get("pinned"),
            "active_release": row.get("active_release"),
            "active_commit": row.get("active_commit"),
            "desired_commit": row.get("desired_commit"),
            "last_deployed_at": row.get("last_deployed_at"),
            "message": row.get("message") or ("" if row else "not reconciled yet"),
        }
        if invalid is not None:
            view.update(sync="Invalid", message=invalid.message)
        views.append(view)
    return views


def history_views(store: Store, domain: str) -> list[dict[str, Any]]:
    site = store.site(domain) or {}
    active_id = site.get("active_deployment_id")
    active_release = site.get("active_release")
    views = []
    for row in store.deployments(domain):
        is_active = row["id"] == active_id or (active_id is None and row["release"] == active_release)
        views.append({
            "id": row["id"],
            "release": row["release"],
            "status": row["status"],
            "commit_sha": row["commit_sha"],
            "branch": row["branch"],
            "deployment_path": row["deployment_path"],
            "log_file_path": row["log_file_path"],
            "started_at": row["started_at"],
            "completed_at": row["completed_at"],
            "duration_ms": row["duration_ms"],
            "is_active": bool(is_active),
            "can_rollback": row["status"] == "success" and row["deployment_path"] is not None
            and not is_active,
        })
    return views


_COLORS = {"Synced": "32", "Healthy": "32", "OutOfSync": "33", "Progressing": "36", "Degraded": "33",
           "Failed": "31", "Invalid": "31", "Missing": "31", "Unknown": "90"}


def use_color(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (no-color.org)."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


def paint(text: str, color: bool) -> str:
    code = _COLORS.get(text.strip())
    return f"\033[{code}m{text}\033[0m" if color and code else text


def table(headers: list[str], rows: list[list[str]], color: bool = False) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(paint(c.ljust(w), color) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def site_detail(view: dict[str, Any], deployments: list[dict[str, Any]], color: bool = False) -> str:
    """`status D`: one site, why it is in its state, and its last deployments."""
    lines = [f"{view['domain']} on {view['server']}",
             f"  sync:      {paint(view['sync'], color)}",
             f"  health:    {paint(view['health'], color)}",
             f"  active:    {view['active_release'] or '-'} ({(view['active_commit'] or '-')[:12]})",
             f"  desired:   {(view['desired_commit'] or '-')[:12]}",
             f"  pinned:    {view['pinned'] or '-'}",
             f"  deployed:  {view['last_deployed_at'] or '-'}"]
    if view["message"]:
        lines.append(f"  why:       {view['message']}")
    if deployments:
        lines += ["", "  last deployments:"]
        rows = [[str(d["id"]), d["release"], d["status"], (d["commit_sha"] or "-")[:12], d["started_at"] or "-",
                 "active" if d["is_active"] else ("pruned" if d["deployment_path"] is None else "")]
                for d in deployments]
        lines += ["    " + line for line in table(["ID", "RELEASE", "STATUS", "COMMIT", "STARTED", ""], rows,
                                                   color).splitlines()]
    return "\n".join(lines)
