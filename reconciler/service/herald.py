"""From outcomes to deliveries, for the daemon and the CLI alike: read what a site's round needs
(its rows), ask service/news.py which events it causes, claim each in the state database
(engine/notice_memory.py) so the daemon and a CLI run never both send one event, and hand what
this process claimed to webhooks.Notifications.

Reads first and writes only when something is news: a round that changes nothing writes nothing.
Nothing here keeps memory in the process: what was said, and what each site served at the last
look (an event's previous_release), are rows in the state database, a few per site.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from reconciler.config import NotifyEvent, Settings
from reconciler.core.declarations import SiteDeclaration
from reconciler.engine import notice_memory
from reconciler.engine.outcome import SiteOutcome
from reconciler.engine.store import Store
from reconciler.service import announce, news
from reconciler.service.webhooks import Notifications

log = logging.getLogger(__name__)


class Herald:
    """Announces rounds and fetches through `notifications`; `settings` is read when used (SIGHUP)."""

    def __init__(self, settings: Callable[[], Settings], store: Store, notifications: Notifications) -> None:
        self.settings, self.store, self.notifications = settings, store, notifications

    def _endpoint(self) -> str | None:
        settings = self.settings()
        return announce.endpoint(settings.listen, settings.http_hosts)

    def site(self, site: SiteDeclaration, outcome: SiteOutcome) -> None:
        """Announce what one site's round caused."""
        if not self.notifications.targets:
            return
        store = self.store
        row: Mapping[str, Any] = store.site(site.domain) or {}
        live, commit, live_id = row.get("active_release"), row.get("active_commit"), row.get("active_deployment_id")
        servers = tuple(site.targets)
        memory = notice_memory.recall(store, [site.domain, *(news.server_scope(s) for s in servers),
                                              news.repository_scope(site.repository)])
        known = news.Known(site.server, site.build_key, row,
                           live=store.deployment(live_id) if live_id is not None else None,
                           previous=self._previous(site.domain, memory, live, commit),
                           history=store.deployments(site.domain) if news.needs_history(outcome) else (),
                           endpoint=self._endpoint(), servers=servers, repository=site.repository)
        self.take(site.domain, news.news(outcome, known), memory)

    def declarations(self, problem: str) -> None:
        """Announce a fetch of the declarations repository: `problem` is why it failed, "" if not."""
        if not self.notifications.targets:
            return
        memory = notice_memory.recall(self.store, [news.DECLARATIONS])
        self.take(None, news.declarations(problem, self._endpoint()), memory)

    def take(self, domain: str | None, notices: Iterable[news.Notice], memory: Mapping[tuple[str, str], str]) -> None:
        """Act on notices: what `memory` (the rows as read) shows to be news is claimed, and sent
        by the one process whose claim changed the row."""
        for notice in notices:
            scope = notice.scope or domain or ""
            about = None if notice.scope is not None else domain
            remembered = memory.get((scope, str(notice.event)))
            if isinstance(notice, news.Forget):
                if remembered is not None and notice_memory.release(self.store, scope, notice.event) \
                        and notice.recovered is not None:
                    self.notifications.emit(NotifyEvent.RECOVERED, about, **notice.recovered)
                continue
            if notice.once_key and (remembered == notice.once_key
                                    or not notice_memory.claim(self.store, scope, notice.event, notice.once_key)):
                continue
            self.notifications.emit(notice.event, about, **notice.fields)

    def _previous(self, domain: str, memory: Mapping[tuple[str, str], str], release: str | None,
                  commit: str | None) -> tuple[str | None, str | None] | None:
        """What `domain` served at the previous look (None on the first, or when nothing was live
        then), and note what it serves now."""
        now = f"{release or ''} {commit or ''}"
        before = memory.get((domain, notice_memory.LIVE))
        if before != now:
            notice_memory.claim(self.store, domain, notice_memory.LIVE, now)
        if before is None or not before.strip():
            return None
        was_release, _, was_commit = before.partition(" ")
        return was_release or None, was_commit or None
