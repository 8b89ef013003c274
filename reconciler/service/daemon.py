"""`reconciler run`: the long-running reconciler.

Triggers: a ref change in the declarations repository (watchfiles) converges the sites
whose declarations changed within a second; an APScheduler job every `interval` seconds
(with jitter) runs a full pass, which polls app branches, corrects drift and is the
backstop against a missed event. Work is dispatched per server (one probe for the sites
that need it) and per site (one worker at a time, a global concurrency limit). Temporary
errors back off per site; permanent ones wait for a change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections import defaultdict
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from reconciler.config import Settings, load_settings
from reconciler.core.declarations import Declarations, SiteDeclaration
from reconciler.core.status import Health, Sync
from reconciler.engine.converge import Reconciler
from reconciler.engine.memo import Memo
from reconciler.engine.outcome import SiteOutcome
from reconciler.engine.retention import RETENTION_EVERY
from reconciler.engine.store import Store
from reconciler.engine.views import declared
from reconciler.errors import ConfigError, ReconcilerError
from reconciler.service.control import ControlSocket, Wake
from reconciler.service.herald import Herald
from reconciler.service.http.app import serve
from reconciler.service.http.context import WebContext
from reconciler.service.metrics import PassStats
from reconciler.service.queue import BACKOFF_CAP, SiteQueue
from reconciler.service.systemd import Notifier
from reconciler.service.watch import DeclarationsWatch
from reconciler.service.webhooks import Notifications

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 30.0


class Daemon:
    """`reconciler run`: turns triggers (ref changes, the interval poll, API requests) into
    server rounds of `Reconciler.converge_server`, one worker per site, and schedules each
    site's next look from its outcome (`retry_after`, `backoff`). Owns the lifecycle: signals,
    SIGHUP reload, sd_notify, the HTTP endpoint and outgoing notifications."""

    def __init__(self, settings: Settings, *, config_path: str | None = None,
                 overrides: dict[str, Any] | None = None, notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.overrides = overrides or {}
        self.notifier = notifier or Notifier()
        self.store = Store(settings.db_path)
        self.reconciler = Reconciler(settings, self.store)
        self.decls: Declarations | None = None
        self.queue = SiteQueue(BACKOFF_CAP)
        self.last: dict[str, tuple[str, str, str]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.wake = asyncio.Event()
        self.stopping = asyncio.Event()
        self.watcher = DeclarationsWatch(lambda: self.settings, self.reconciler, self.stopping,
                                         self.declarations_moved, self.request, self._fetched)
        self.scheduler: AsyncIOScheduler | None = None
        self.stats = PassStats()
        self.reconciler.on_health_check = self.stats.observe_health
        self.notifications = Notifications(settings.notify)
        self.herald = Herald(lambda: self.settings, self.store, self.notifications)
        self.control = ControlSocket(self._woken, self._live)

    # -- triggers ----------------------------------------------------------------------------

    def request(self, domains: set[str] | None = None) -> None:
        """Ask for a pass: of `domains`, or of every site when None."""
        self.queue.request(domains)
        self.wake.set()

    def _woken(self, wake: Wake) -> str | None:
        """The command line asks (control socket): a pin or unpin that just landed takes the
        lock command's fast path, as if the watch had seen it; a retry or redeploy is a round.
        A site of another shard is refused (why), never waited for."""
        skipped = self.reconciler.skipped
        if others := [d for d in wake.domains if d in skipped]:
            return "; ".join(f"{d}: {skipped[d]}" for d in others) + ": the instance of its shard applies it"
        self.asked(set(wake.domains), landed=wake.landed is not None)
        return None

    def asked(self, domains: set[str], landed: bool) -> None:
        """An operator asked for these sites (the command line's control socket, the API, the
        dashboard): they go now, not after a backoff; `landed`, a pin or unpin commit just
        landed: it takes the lock command's fast path, as if the watch had seen it."""
        self.queue.asked(domains)
        if landed:
            self.queue.hurry(domains)
        self.wake.set()

    def _live(self, domain: str) -> str | None:
        row = self.store.site(domain)
        return row["active_release"] if row is not None else None

    async def declarations_moved(self) -> None:
        """A ref changed: re-resolve the branch and queue the sites whose declaration changed."""
        try:
            new = await self.reconciler.load_async()
        except ReconcilerError as exc:
            log.warning("declarations: %s", exc)
            return
        except Exception:
            log.exception("declarations: cannot be read")
            return
        old = self.decls
        if old is not None and new.commit == old.commit:
            return
        mine = self.reconciler.owned(new)  # another shard's sites are not ours to hurry
        changed = {d for d in set(mine.sites) | set(mine.invalid)
                   if old is None or old.sites.get(d) != new.sites.get(d) or d in new.invalid}
        log.info("declarations at %s: %d site(s) changed", (new.commit or "")[:12], len(changed))
        self.queue.hurry(changed)
        self.wake.set()

    # -- dispatch ----------------------------------------------------------------------------

    async def dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.stopping.is_set():
            await self.wake.wait()
            self.wake.clear()
            if self.stopping.is_set():
                break
            try:
                decls = await self.reconciler.load_async()
            except Exception as exc:
                # The daemon outlives any declarations commit: report it and wait for the next.
                if isinstance(exc, ReconcilerError):
                    log.error("declarations: %s", exc)
                else:
                    log.exception("declarations: cannot be read")
                self.notifier.status(f"declarations unreadable: {exc}")
                continue
            if decls.notice and (self.decls is None or self.decls.notice != decls.notice):
                log.warning("%s", decls.notice)
            if decls.commit is not None and (self.decls is None or self.decls.commit != decls.commit):
                self._remember_for_status(decls)
            self.decls = decls  # all of them: status lists the skipped sites too, saying why
            mine = self.reconciler.owned(decls)  # sharded: only the sites of our servers
            self._record_invalid(mine)
            ready = self.queue.take_ready(mine.sites.keys(), loop.time())
            if not ready:
                continue
            by_server: dict[str, list[SiteDeclaration]] = defaultdict(list)
            for domain in sorted(ready):
                site = mine.sites[domain]
                if len(site.targets) > 1:
                    self._spawn(self._many_round(site, decls.commit))  # probed by the executor, all at once
                else:
                    by_server[site.server].append(site)
            for server, sites in by_server.items():
                self._spawn(self._server_round(server, sites, decls.commit))

    def _was_pinned(self, domain: str) -> bool:
        try:
            row = self.reconciler.store.site(domain)
            return bool(row is not None and row["pinned"])
        except Exception:
            log.exception("%s: could not read whether it was pinned", domain)
            return False

    def _remember_for_status(self, decls: Declarations) -> None:
        """`status` starts without pydantic and pygit2 when what it shows of the applied commit is
        remembered (engine/memo.py); the daemon has just parsed the commit, so it writes that
        summary (in a thread, best effort) and the first `status` after a commit is quick too.
        With `require_signed` status always takes the long way, so nothing is written."""
        settings = self.reconciler.settings
        if decls.commit is None or settings.require_signed != "off" or not settings.db_path.exists():
            return
        try:
            memo, sites = Memo(settings.state_dir), declared(decls)
        except Exception:
            # A convenience for the CLI: it must never stop the dispatcher.
            log.exception("could not summarise declarations %s for status", decls.commit[:12])
            return
        self._spawn(asyncio.to_thread(memo.remember_declared, decls.commit, settings.allow_local, sites))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        # converge_server never raises; should a bug make it, the log says so (no silent
        # "Task exception was never retrieved") and the next request runs a fresh task.
        if not task.cancelled() and task.exception() is not None:
            log.error("a server round failed", exc_info=task.exception())

    def _record_invalid(self, decls: Declarations) -> None:
        for domain, invalid in decls.invalid.items():
            if self.last.get(domain) != (Sync.INVALID, Health.UNKNOWN, invalid.message):
                log.warning("%s: Invalid: %s", domain, invalid.message)
                self.last[domain] = (Sync.INVALID, Health.UNKNOWN, invalid.message)
        self.reconciler.record_invalid(decls)

    async def _server_round(self, server: str, sites: list[SiteDeclaration], decl_commit: str | None) -> None:
        started = asyncio.get_running_loop().time()
        reached = False
        hurried = self.queue.take_hurried({s.domain for s in sites})
        # A pin, or an unpin, that just landed: the lock command switches (one round trip).
        eager = {s.domain for s in sites if s.domain in hurried and (s.pin is not None or self._was_pinned(s.domain))}
        by_domain = {s.domain: s for s in sites}
        settled: set[str] = set()

        def settle(outcome: SiteOutcome) -> None:
            # Each site as soon as its outcome is known: a site requested again (a new commit)
            # must not wait for its server's slowest deploy of this round to be looked at.
            settled.add(outcome.domain)
            self._settle(by_domain[outcome.domain], outcome, decl_commit)
            if self.queue.done([outcome.domain]):
                self.wake.set()

        try:
            result = await self.reconciler.converge_server(server, sites, decl_commit, eager=eager,
                                                           still_desired=self._still_desired, on_outcome=settle)
            reached = result.reached
            for outcome in result.outcomes:
                if outcome.domain not in settled:  # a failed probe's outcomes come at the end
                    settle(outcome)
        finally:
            self._round_over(started, reached, [site.domain for site in sites])

    async def _many_round(self, site: SiteDeclaration, decl_commit: str | None) -> None:
        """A site on many servers: one rollout over all of them (the executor probes them at once)."""
        started = asyncio.get_running_loop().time()
        outcome: SiteOutcome | None = None
        try:
            outcome = await self.reconciler.converge_many(site, decl_commit)
            self._settle(site, outcome, decl_commit)
        finally:
            self._round_over(started, outcome is not None and outcome.sync != Sync.UNKNOWN, [site.domain])

    def _round_over(self, started: float, reached: bool, domains: list[str]) -> None:
        """A round ended, however: count it, free its sites, and go on if more is asked for."""
        self.stats.observe(asyncio.get_running_loop().time() - started, reached)
        self.queue.done(domains)
        if self.queue.pending:
            self.wake.set()
        self._publish_status()

    def _settle(self, site: SiteDeclaration, outcome: SiteOutcome, decl_commit: str | None = None) -> None:
        """Schedule what the outcome asks for: a retry (after a lock wait, or with backoff),
        another round (superseded while building), or nothing until a change. A command line
        waiting for this site's round at `decl_commit` is answered."""
        try:
            self.control.settled(site.domain, decl_commit, outcome)
            if outcome.retry_after is not None and outcome.backoff:
                self._notify(site, outcome)  # an unreachable server, or work done (a reload failed): news
                self._backoff(site, outcome)
                return
            if outcome.retry_after is not None:
                asyncio.get_running_loop().call_later(outcome.retry_after, self.request, {site.domain})
                self._report(outcome)
                return
            self.queue.recovered(site.domain)
            if outcome.superseded:
                self.request({site.domain})  # superseded while building: go again with the new declaration
            if outcome.held_until is not None:
                self._when_open(site.domain, outcome.held_until)
            self._notify(site, outcome)
            self._report(outcome)
        except Exception:
            log.exception("%s: could not settle the outcome", site.domain)

    def _when_open(self, domain: str, until: datetime) -> None:
        """Held by a deploy window: look at the site again as the window opens, when that is
        before the next interval poll (which looks anyway, so a long hold piles up no timers)."""
        delay = (until - self.reconciler.clock()).total_seconds()
        if delay < self.settings.interval:
            asyncio.get_running_loop().call_later(max(delay, 0.0), self.request, {domain})

    def _notify(self, site: SiteDeclaration, outcome: SiteOutcome) -> None:
        """Send the events the round causes (service/news.py decides which, herald.py once)."""
        try:
            self.herald.site(site, outcome)
        except Exception:
            log.exception("%s: could not send its notifications", site.domain)

    def _fetched(self, problem: str) -> None:
        """A fetch of the declarations repository ended: `problem` is why it failed, "" if not."""
        try:
            self.herald.declarations(problem)
        except Exception:
            log.exception("declarations: could not send the notifications of a fetch")

    def _still_desired(self, site: SiteDeclaration) -> bool:
        try:
            current = self.reconciler.load().sites.get(site.domain)
        except Exception:
            return True  # cannot tell: the declaration we built for is the last one we know
        return current == site

    def _backoff(self, site: SiteDeclaration, outcome: SiteOutcome) -> None:
        """A temporary error: retry this site later, doubling the wait up to BACKOFF_CAP."""
        loop = asyncio.get_running_loop()
        delay = self.queue.backoff(site.domain, outcome.retry_after or 0.0, loop.time())
        loop.call_later(delay, self.request, {site.domain})
        text = f"{outcome.message} (retrying in {delay:.0f}s)"
        self.store.update_site(site.domain, server=site.server, sync=outcome.sync, health=outcome.health,
                               message=text)
        self._report(SiteOutcome(site.domain, site.server, outcome.sync, outcome.health, text))

    def _report(self, outcome: SiteOutcome) -> None:
        key = (outcome.sync, outcome.health, outcome.message)
        if outcome.actions or self.last.get(outcome.domain) != key:
            detail = "; ".join(outcome.actions) or outcome.message
            level = logging.INFO if outcome.sync == Sync.SYNCED else logging.WARNING
            log.log(level, "%s: %s/%s%s", outcome.domain, outcome.sync, outcome.health,
                    f" - {detail}" if detail else "")
        self.last[outcome.domain] = key

    def summary(self) -> str:
        counts: dict[str, int] = defaultdict(int)
        rows = self.store.sites()
        declared = set(self.decls.sites) | set(self.decls.invalid) if self.decls else set(rows)
        skipped = self.reconciler.skipped
        for domain in declared - skipped.keys():
            found = rows.get(domain)
            counts[(found["sync"] if found is not None else None) or Sync.UNKNOWN] += 1
        order = list(Sync)
        text = ", ".join(f"{counts[k]} {k.lower()}" for k in order if counts[k]) or "no sites"
        shard = self.reconciler.shard
        return text if shard.whole else f"shard {shard}: {text}; {len(skipped)} skipped (other shards)"

    def _publish_status(self) -> None:
        self.notifier.status(self.summary())

    # -- lifecycle ---------------------------------------------------------------------------

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        if interval is None:
            return
        while not self.stopping.is_set():
            self.notifier.watchdog()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), interval)

    def _schedule(self) -> None:
        if self.scheduler is None:
            self.scheduler = AsyncIOScheduler()
            self.scheduler.start()
        interval = self.settings.interval
        self.scheduler.add_job(self.request, "interval", seconds=interval, jitter=min(interval / 10, 30),
                               id="poll", replace_existing=True, coalesce=True, max_instances=1)
        if self.settings.retention_days is None:
            with contextlib.suppress(JobLookupError):
                self.scheduler.remove_job("retention")
        else:  # now, then every few hours
            self.scheduler.add_job(self._expire, "interval", seconds=RETENTION_EVERY, id="retention",
                                   replace_existing=True, coalesce=True, max_instances=1,
                                   next_run_time=datetime.now(UTC))

    async def _expire(self) -> None:
        try:
            self.reconciler.expire_history()
        except Exception:  # a failed clean-up is never the daemon's end
            log.exception("retention: history not pruned")

    def reload(self) -> None:
        """SIGHUP: re-read the config file; new timeouts, interval, concurrency and `[[notify]]`
        targets apply from now (deliveries already under way finish as they were)."""
        try:
            settings = load_settings(self.config_path, **self.overrides)
        except ConfigError as exc:
            log.error("SIGHUP: configuration not reloaded: %s", exc)
            return
        if settings.repo != self.settings.repo or settings.state_dir != self.settings.state_dir:
            log.warning("SIGHUP: repo and state_dir changes need a restart; keeping the old ones")
            settings = settings.model_copy(update={"repo": self.settings.repo, "state_dir": self.settings.state_dir})
        if settings.shard != self.settings.shard:
            # Safe at any moment: a site changing hands mid-deploy is still held by its lock.
            log.warning("SIGHUP: shard %s -> %s: this instance now works on other servers' sites",
                        self.settings.shard, settings.shard)
        self.settings = settings
        self.reconciler.reconfigure(settings)
        self.notifications.targets = list(settings.notify)
        self._schedule()
        log.info("configuration reloaded")
        self.request()

    def stop(self) -> None:
        if not self.stopping.is_set():
            log.info("stopping: finishing in-flight switches, aborting builds")
            self.notifier.stopping()
            self.stopping.set()
            self.wake.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        interrupted = self.store.mark_interrupted()
        if interrupted:
            log.warning("marked %d deployment(s) left by a stopped process as failed (interrupted)", len(interrupted))
        if self.settings.repo_url is not None:
            await self.watcher.fetch_declarations()  # the mirror first: the watcher and the first pass read it
        self._schedule()
        self.request()
        await self.control.start(self.settings.state_dir)
        background = [asyncio.create_task(self.dispatch()), asyncio.create_task(self._watchdog())]
        if self.settings.repo_url is not None:
            background.append(asyncio.create_task(self.watcher.fetch_loop()))
        watching = asyncio.create_task(self.watcher.watch())
        runner = None
        if self.settings.listen:
            runner = await serve(WebContext(lambda: self.settings, self.store, self.reconciler.pool, self.stats,
                                            lambda: self.decls, self.request, self.stopping, self.reconciler,
                                            self.watcher.fetch_soon, self.asked))
        log.info("reconciler running: repo %s, branch %s, every %.0fs%s", self.settings.repo,
                 self.settings.branch, self.settings.interval,
                 "" if self.reconciler.shard.whole else f", shard {self.reconciler.shard}")
        self.notifier.ready("first pass scheduled")
        await self.stopping.wait()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=SHUTDOWN_GRACE)
        settled = self.store.settle_progressing("the daemon stopped while this site was being changed; "
                                                "it is looked at again at the next start")
        if settled:
            log.info("settled %d site(s) left in progress: %s", len(settled), ", ".join(settled))
        for task in [*background, watching]:
            task.cancel()
        await asyncio.gather(*background, watching, return_exceptions=True)
        if runner is not None:
            await runner.cleanup()
        await self.notifications.close()
        await self.control.close()
        await self.reconciler.close()
        self.store.close()
        log.info("stopped")
        return 0


def run_daemon(settings: Settings, config_path: str | None = None, overrides: dict[str, Any] | None = None) -> int:
    from reconciler.service.journal import setup

    setup()
    return asyncio.run(Daemon(settings, config_path=config_path, overrides=overrides).run())
