"""Retention: history and deployment logs older than `retention_days` are forgotten.

What may go is chosen by the store (`Store.expired`): rows of releases no longer on any server,
never the latest row of a site on a server, nor anything live or unfinished. Their logs under
`state_dir/logs` go with them, and so do log files no row names any more (a database deleted and
rebuilt from the servers) once they are as old. Without `retention_days` nothing is forgotten:
history is the record of who deployed what, and it grows by one row and one log (at most
LOCAL_LOG_BYTES) per deployment. Run by the daemon every RETENTION_EVERY seconds and by `prune`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from reconciler.engine.store import Store

log = logging.getLogger(__name__)

RETENTION_EVERY = 6 * 3600.0  # seconds between the daemon's runs (rows expire by days: no hurry)


@dataclass(frozen=True)
class Expired:
    """What retention forgot (or, in a dry run, would forget)."""

    deployments: int = 0
    activations: int = 0
    logs: int = 0

    def describe(self, days: int, dry_run: bool = False) -> str:
        verb = "would forget" if dry_run else "forgot"
        if not (self.deployments or self.activations or self.logs):
            return f"history: nothing older than {days} days to forget"
        return (f"history: {verb} {self.deployments} deployment{'s' if self.deployments != 1 else ''}, "
                f"{self.activations} activation{'s' if self.activations != 1 else ''} and {self.logs} "
                f"log{'s' if self.logs != 1 else ''} older than {days} days")


def expire(store: Store, log_dir: Path, days: int, now: datetime, dry_run: bool = False) -> Expired:
    """Forget history and logs older than `days` before `now` (aware, UTC)."""
    moment = now - timedelta(days=days)
    before = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    rows, activations = store.expired(before)
    logs = [path for row in rows if (path := _inside(log_dir, row["local_log"])) is not None]
    kept = {os.path.abspath(row["local_log"]) for row in store.db.query(
        "select local_log from deployments where local_log is not null")} | {str(p) for p in logs}
    logs += [path for path in _orphans(log_dir, moment.timestamp()) if os.path.abspath(path) not in kept]
    if dry_run:
        return Expired(len(rows), len(activations), len(logs))
    store.forget_history([row["id"] for row in rows], activations)
    removed = 0
    for path in logs:
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("retention: could not remove %s: %s", path, exc)
    done = Expired(len(rows), len(activations), removed)
    if rows or activations or removed:
        log.info("%s", done.describe(days))
    return done


def _inside(log_dir: Path, path: str | None) -> Path | None:
    """`path` when it is a file directly in a site's folder of `log_dir` (never anything else a
    row might name: a database is not trusted to choose what is deleted)."""
    if not path:
        return None
    found = Path(os.path.abspath(path))
    return found if found.parent.parent == Path(os.path.abspath(log_dir)) and found.suffix == ".log" else None


def _orphans(log_dir: Path, before: float) -> list[Path]:
    """Log files of `log_dir`'s site folders last written before `before` (symlinks never followed)."""
    found: list[Path] = []
    if not log_dir.is_dir():
        return found
    for site in os.scandir(log_dir):
        if not site.is_dir(follow_symlinks=False):
            continue
        for entry in os.scandir(site.path):
            if entry.name.endswith(".log") and entry.is_file(follow_symlinks=False) \
                    and entry.stat(follow_symlinks=False).st_mtime < before:
                found.append(Path(entry.path))
    return found
