"""Terminal rendering: tables, colours and the one-site detail of `status D`.

Every cell passes through `printable`: messages carry text from servers and repositories
(lock owners, manifests, git errors), which must never drive the operator's terminal."""

from __future__ import annotations

import os
from typing import Any, TextIO

from reconciler.core.text import printable

_COLORS = {"Synced": "32", "Healthy": "32", "OutOfSync": "33", "Progressing": "36", "Degraded": "33",
           "Failed": "31", "Invalid": "31", "Missing": "31", "Unknown": "90"}


def use_color(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (no-color.org)."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


def paint(text: str, color: bool) -> str:
    code = _COLORS.get(text.strip())
    return f"\033[{code}m{text}\033[0m" if color and code else text


def table(headers: list[str], rows: list[list[str]], color: bool = False) -> str:
    rows = [[printable(cell) for cell in row] for row in rows]
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
             f"  desired:   {(view['desired_commit'] or '-')[:12]}"
             + (f" ({view['ref']})" if view.get("ref") else ""),
             f"  pinned:    {view['pinned'] or '-'}",
             f"  deployed:  {view['last_deployed_at'] or '-'}",
             f"  observed:  {view.get('observed_at') or 'never'} (when its server was last probed)"]
    if view.get("skipped"):
        lines.append(f"  shard:     {view['shard']} (another instance's; this one leaves it alone)")
    if view["message"]:
        lines.append(f"  why:       {printable(view['message'])}")
    if len(view.get("servers") or []) > 1:
        lines.append("  servers:")
        for entry in view["servers"]:
            note = f"  {entry['message']}" if entry["message"] else ""
            lines.append(printable(f"    {entry['server']}: {entry['active_release'] or '-'}{note}"))
    if deployments:
        lines += ["", "  last deployments:"]
        rows = [[str(d["id"]), d["release"], d["status"], (d["commit_sha"] or "-")[:12], d.get("ref") or "-",
                 d["started_at"] or "-",
                 "; ".join(x for x in ("active" if d["is_active"] else ("pruned" if d["deployment_path"] is None
                                                                         else ""), _unlike(d)) if x)]
                for d in deployments]
        lines += ["    " + line for line in table(["ID", "RELEASE", "STATUS", "COMMIT", "REF", "STARTED", ""], rows,
                                                   color).splitlines()]
    return "\n".join(lines)


def _unlike(release: dict[str, Any]) -> str:
    """The servers of a release on many whose result is not a success, when the servers do not
    agree: "web-2 failed"."""
    servers = release.get("servers") or []
    if len({s["status"] for s in servers}) < 2:
        return ""
    return ", ".join(f"{s['server']} {s['status']}" for s in servers if s["status"] != "success")


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _cause(trigger: str, by: str) -> str:
    return f"{trigger} ({by.split(' <')[0]})" if trigger and by else trigger or "-"


def history_table(views: list[dict[str, Any]], color: bool = False) -> str:
    """`history D`: deployments and, as their own rows, the switches back to a release without a
    build (activations), newest first; each says what it was, why, and who asked. A release of a
    site on many servers is one row, followed by a row per server with that server's result (its
    ID is the one `logs D ID` shows)."""
    events: list[tuple[str, list[list[str]]]] = []
    for v in views:
        why = v["message"] if v["status"] == "failed" else ""
        lines = [[
            str(v["id"]), v["release"], v["status"], (v["commit_sha"] or "-")[:12], v.get("ref") or "-",
            _short(v.get("commit_subject") or "-", 40), _cause(v.get("trigger") or "", v.get("requested_by") or ""),
            v["started_at"] or "-", _duration(v["duration_ms"]),
            "; ".join(x for x in ("active" if v["is_active"] else ("pruned" if v["deployment_path"] is None else ""),
                                  _short(why, 60)) if x)]]
        servers = v.get("servers") or []
        if len(servers) > 1:
            lines += [_server_line(v, s) for s in servers]
        events.append((v["started_at"] or "", lines))
        for event in v.get("activations", []):
            events.append((event["at"], [[
                "-", v["release"], "activated", (v["commit_sha"] or "-")[:12], v.get("ref") or "-",
                f"from {event['previous'] or 'none'}", _cause(event["trigger"], event["requested_by"]),
                event["at"], "-", ""]]))
    events.sort(key=lambda e: e[0], reverse=True)
    return table(["ID", "RELEASE", "STATUS", "COMMIT", "REF", "SUBJECT", "TRIGGER", "STARTED", "DURATION", ""],
                 [line for _, lines in events for line in lines], color)


def _server_line(release: dict[str, Any], result: dict[str, Any]) -> list[str]:
    """One server's result under its release's row: only what may differ between servers."""
    cause = _cause(result.get("trigger") or "", result.get("requested_by") or "")
    why = result["message"] if result["status"] == "failed" else ""
    return [str(result["id"]), f"  {result['server']}", result["status"], "", "", "",
            "" if cause == _cause(release.get("trigger") or "", release.get("requested_by") or "") else cause,
            result["started_at"] or "-", _duration(result["duration_ms"]),
            "; ".join(x for x in ("active" if result["is_active"] else
                                  ("pruned" if result["deployment_path"] is None else ""), _short(why, 60)) if x)]


def _duration(ms: int | None) -> str:
    return f"{ms} ms" if ms is not None else "-"
