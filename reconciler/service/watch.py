"""How the daemon learns that the declarations moved: a watch on the declarations repository's
refs (watchfiles), and, for declarations on a Git host, the fetch into the local mirror that the
watch then sees (every `repo_interval`, at once when a push webhook asks). Either way the daemon
is told (`moved`), and decides what to look at again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from watchfiles import Change, awatch

from reconciler.config import Settings
from reconciler.engine import source
from reconciler.engine.converge import Reconciler
from reconciler.errors import ReconcilerError
from reconciler.service.queue import BACKOFF_CAP

log = logging.getLogger(__name__)

WATCH_RETRY = 30.0


def _ref_event(change: Change, path: str) -> bool:
    """Only ref updates matter; the event is a prompt to re-resolve the branch, nothing more."""
    name = Path(path).name
    return not name.endswith(".lock") and "/objects/" not in path and "/logs/" not in path


def _top_level_event(change: Change, path: str) -> bool:
    return Path(path).name in ("packed-refs", "HEAD")


class DeclarationsWatch:
    """The ref watcher and the Git host's fetch loop of one daemon. `settings` are read when
    used (SIGHUP replaces them); `moved` is awaited on every ref change; `request_all` asks for
    a look at every site (the Git host became reachable, or stopped being)."""

    def __init__(self, settings: Callable[[], Settings], reconciler: Reconciler, stopping: asyncio.Event,
                 moved: Callable[[], Awaitable[None]], request_all: Callable[[], None],
                 fetched: Callable[[str], None] = lambda problem: None) -> None:
        self.settings, self.reconciler, self.stopping = settings, reconciler, stopping
        self.moved, self.request_all, self.fetched = moved, request_all, fetched
        self.fetch_now = asyncio.Event()

    async def fetch_declarations(self) -> bool:
        """Declarations on a Git host: fetch them into the mirror (the ref watcher then sees what
        moved). An unreachable host leaves the last fetched commit in force; when that changes,
        every site is looked at again so each status says so (or stops saying so)."""
        was = self.reconciler.fetch_problem
        try:
            reached = await self.reconciler.refresh_upstream()
        except ReconcilerError as exc:
            self.reconciler.desired.fetch_problem = str(exc)
            reached = False
        self.fetched(self.reconciler.fetch_problem)  # notifications: once per outage, shared with the CLI
        if self.reconciler.fetch_problem != was:
            if reached:
                log.info("declarations: %s reachable again", self.settings().repo_url)
            else:
                log.warning("declarations: %s", self.reconciler.fetch_problem)
            self.request_all()
        return reached

    async def fetch_loop(self) -> None:
        """Fetch every `repo_interval`, at once when a webhook asks (`fetch_soon`), backing off
        (doubling, but never beyond `repo_interval`) while the Git host is unreachable: a host
        that is back is fetched, and every status cleared, within one `repo_interval`."""
        delay = self.settings().repo_interval
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.fetch_now.wait(), delay)
            self.fetch_now.clear()
            if self.stopping.is_set():
                return
            reached = await self.fetch_declarations()
            every = self.settings().repo_interval
            delay = every if reached else min(max(delay * 2, 5.0), max(every, 5.0), BACKOFF_CAP)

    def fetch_soon(self) -> None:
        """A push webhook for the declarations repository: fetch now."""
        self.fetch_now.set()

    async def watch(self) -> None:
        """Watch the declarations repository's refs. The watcher never dies: if it fails (the
        repository vanished, inotify ran out), the interval poll carries on and it restarts."""
        while not self.stopping.is_set():
            try:
                await self._watch_once()
                return
            except Exception:
                log.exception("watching %s failed; the interval poll continues, retrying in %.0fs",
                              self.settings().local_repo, WATCH_RETRY)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), WATCH_RETRY)

    async def _watch_once(self) -> None:
        repo = source.open_repository(self.settings().local_repo)
        git_dir = Path(repo.path)
        refs = git_dir / "refs"

        async def one(path: Path, recursive: bool, accept: Callable[[Change, str], bool]) -> None:
            async for _ in awatch(path, watch_filter=accept, recursive=recursive, debounce=200, step=30,
                                  stop_event=self.stopping):
                await self.moved()

        # watchfiles' default filter drops everything under .git: watch refs/ recursively and
        # the git dir itself flat (packed-refs), with filters of our own.
        await asyncio.gather(one(refs, True, _ref_event), one(git_dir, False, _top_level_event))
