"""What `[[notify]]` has already said, in the state database: the one memory that makes an event
go out once when the daemon and the CLI (several CLI runs, too) work on the same sites.

A row per (scope, event) holds the event's once-key: a scope is a site's domain, or a cause
("server web-1", "declarations"). `claim` is the only way to say something: it writes the key
and answers True only to the one process whose statement changed the row (SQLite serialises
writers, and the statement's changed-row count is that process's alone), so two processes that
see the same outage send one `unreachable`. `release` deletes a row and answers whether there
was one: only the process that deleted it sends `recovered`. Bounded: a row per site and event,
and per cause while it is out; a site's rows are replaced, never accumulated.
"""

from __future__ import annotations

from collections.abc import Iterable

from reconciler.engine.store import Store, utcnow

LIVE = "live"  # not an event: what the site served at the last look (an event's previous_release)


def recall(store: Store, scopes: Iterable[str]) -> dict[tuple[str, str], str]:
    """The open rows of `scopes`: (scope, event) -> key. One read, no write."""
    wanted = sorted(set(scopes))
    if not wanted:
        return {}
    marks = ",".join("?" * len(wanted))
    rows = store.db.query(f"select scope, event, key from notices where scope in ({marks})", wanted)
    return {(row["scope"], row["event"]): row["key"] or "" for row in rows}


def claim(store: Store, scope: str, event: str, key: str) -> bool:
    """Remember `key` for (scope, event); True when this call changed the row (the event is
    news: send it), False when another process, or an earlier round, already said it."""
    cursor = store.db.execute(
        "insert into notices (scope, event, key, at) values (?, ?, ?, ?) "
        "on conflict (scope, event) do update set key = excluded.key, at = excluded.at "
        "where notices.key is not excluded.key", [scope, event, key, utcnow()])
    return bool(cursor.rowcount == 1)


def release(store: Store, scope: str, event: str) -> bool:
    """Forget (scope, event); True when this call removed a row (the state it was about ended)."""
    cursor = store.db.execute("delete from notices where scope = ? and event = ?", [scope, event])
    return bool(cursor.rowcount == 1)
