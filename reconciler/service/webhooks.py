"""`[[notify]]`: delivers events (deployed, failed, rolled_back, degraded, unreachable,
recovered) to webhooks and chat.

Each `[[notify]]` entry's `url` decides the form (reconciler.config.NotifyTarget):

* `http://` / `https://`: a POST of the event as a JSON object (Content-Type application/json),
  for machines. Any 2xx answer means delivered.
* any other scheme is an apprise URL (`slack://`, `discord://`, `workflow://` (MS Teams),
  `mmost://`, `rocket://`, `tgram://`, `mailto://`, `json://`, ... about a hundred services):
  apprise sends the one-line `text` as the message (no title), typed success (deployed,
  recovered), failure (failed, unreachable), info (rolled_back) or warning (degraded), which the services show as a
  colour or an icon. `text` is neutral (announce.neutral): what a committer or a server wrote
  in it pings nobody and hides no link in any of them. That is done to the text, once, for
  every service: apprise has no way to send Discord's `allowed_mentions` (its `ping=` option
  writes an `allow_mentions` key, and only to add pings), and it passes the text to Discord
  and Mattermost as written.

The event object (announce.py builds it; every key always present, null where it does not
apply):

    event, domain, at      which event, of which site, when (UTC, "...Z"); domain is null
                           for an `unreachable`/`recovered` of a server (server named) or of
                           the declarations repository (server null too)
    server, sync, health,  the site after this round, as `status --json` shows it; message is
    message                the site's status message (for failed: why it failed)
    release, commit        what the event is about: deployed, the new release (now live);
                           rolled_back, the release rolled back to (now live); degraded, the live
                           release; failed, the FAILED build, which never went live (no build to
                           blame, e.g. the site path is a real directory: release null, commit the
                           desired commit)
    commit_subject,        the subject line and "Name <email>" of `commit`
    commit_author
    deployment_id          the history id of `release` (`history --json`, the log API)
    duration_ms,           deployed and failed: the build's duration, the failed step's exit
    exit_status,           status, and what asked for the build: "retry" or "redeploy" (and
    trigger, requested_by  who), null for a change of desired state
    live_release,          what the site serves now. For failed this is the release still live,
    live_commit            untouched by the failure (null before a first deploy)
    previous_release,      deployed and rolled_back: what was live before the switch, as this
    previous_commit        daemon last saw the site (null on its first look at it)
    log_url                the log API of `deployment_id` (needs the api_token), when `listen`
    dashboard_url          is set: the dashboard. Both use the first `http_hosts` name if any,
                           else `listen` (no links when `listen` is a wildcard address)
    text                   one line for people: site, server, from -> to release (short
                           commits), commit subject and author, duration, why it failed and what
                           is still live, the dashboard link; chat markup in it made inert (every
                           @ followed by U+200B, `](` split by it, < > shown as U+2039/U+203A); the fields
                           above are as written

A `failed` event's `release` and `commit` both name the failed build; the live one is in
live_release/live_commit.

Delivery runs in background tasks, retried ATTEMPTS times with a doubling delay, and never
blocks a deploy. Which events are news, and only once across the daemon and the CLI, is
decided before they get here (service/news.py, service/herald.py); a CLI run waits for its
deliveries, DRAIN seconds at most (`drain`). apprise sends with blocking I/O (requests): it
runs on a small thread pool of its own, not on asyncio's default executor, which loads the
declarations, so a chat service that never answers holds up nothing but its own deliveries.
URLs carry tokens: logs name a target by its position and `NotifyTarget.shown`
(scheme://host[:port] of a webhook, the scheme of an apprise URL).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from reconciler.config import NotifyEvent, NotifyTarget
from reconciler.service import announce

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

ATTEMPTS = 5
FIRST_DELAY = 1.0
CHAT_THREADS = 4   # apprise deliveries at once; more wait for a thread, nothing else does
DRAIN = 15.0       # seconds a CLI run waits for its deliveries before it exits
# apprise's message type for each event (a colour or an icon in the chat service); every event has one.
NOTIFY_TYPES: dict[NotifyEvent, str] = {NotifyEvent.DEPLOYED: "success", NotifyEvent.FAILED: "failure",
                                        NotifyEvent.ROLLED_BACK: "info", NotifyEvent.DEGRADED: "warning",
                                        NotifyEvent.UNREACHABLE: "failure", NotifyEvent.RECOVERED: "success"}


def send_chat(url: str, text: str, event: NotifyEvent) -> bool:
    """Deliver `text` through apprise to `url`. Blocking (requests, SMTP, ...): runs on the
    notification threads. True when the service took it."""
    import apprise  # only daemons with chat targets pay for the import

    sender = apprise.Apprise(asset=apprise.AppriseAsset(app_id="reconciler", app_desc="reconciler deployments"))
    if not sender.add(url):
        return False
    kind = apprise.NotifyType(NOTIFY_TYPES[event])
    return bool(sender.notify(body=text, title="", notify_type=kind, body_format=apprise.NotifyFormat.TEXT))


class Notifications:
    """The outgoing `[[notify]]` deliveries of a daemon or a CLI run: builds each event once
    (announce.payload) and delivers it to every target that wants it, each in its own task."""

    def __init__(self, targets: list[NotifyTarget], first_delay: float = FIRST_DELAY) -> None:
        self.targets = targets
        self.first_delay = first_delay
        self._session: aiohttp.ClientSession | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def emit(self, event: NotifyEvent, domain: str | None, **fields: Any) -> None:
        """Queue `event` for every target that wants it. `fields` are announce.FIELDS
        (announce.fields builds them); the rest are null, `text` is made here."""
        payload = announce.payload(event, domain, datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), **fields)
        for number, target in enumerate(self.targets, 1):
            if event in target.events:
                task = asyncio.create_task(self._deliver(number, target, payload))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def wanted(self, event: NotifyEvent) -> bool:
        """Whether any target takes `event`."""
        return any(event in target.events for target in self.targets)

    async def drain(self, timeout: float = DRAIN) -> None:
        """A CLI run's end: wait for the deliveries under way (their retries too), `timeout`
        seconds at most, then close."""
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=timeout)
            if pending:
                log.warning("notify: %d delivery(ies) not finished after %.0fs; given up", len(pending), timeout)
        await self.close()

    async def _deliver(self, number: int, target: NotifyTarget, payload: dict[str, Any]) -> None:
        delay = self.first_delay
        for attempt in range(1, ATTEMPTS + 1):
            problem = await (self._chat(target.url, payload) if target.chat else self._post(target.url, payload))
            if problem is None:
                return
            if attempt == ATTEMPTS:
                log.warning("notify #%d (%s): giving up on %s for %s after %d attempts: %s", number, target.shown,
                            payload["event"], payload["domain"], ATTEMPTS, problem)
                return
            await asyncio.sleep(delay)
            delay *= 2

    async def _post(self, url: str, payload: dict[str, Any]) -> str | None:
        """One JSON POST; None when delivered, else what went wrong (without the URL)."""
        import aiohttp  # here: a CLI run with no webhook target never pays for loading it (~120 ms)

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            async with self._session.post(url, json=payload) as response:
                return None if response.status < 300 else f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return _scrub(str(exc) or type(exc).__name__, url)

    async def _chat(self, url: str, payload: dict[str, Any]) -> str | None:
        """One apprise delivery on the notification threads; None when delivered."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(CHAT_THREADS, thread_name_prefix="notify")
        loop = asyncio.get_running_loop()
        try:
            sent = await loop.run_in_executor(self._pool, send_chat, url, payload["text"], payload["event"])
        except Exception as exc:  # a plugin's bug is a failed attempt; its text may hold the URL
            return f"apprise raised {type(exc).__name__}"
        return None if sent else "not delivered (apprise: the service refused it or did not answer)"

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self._pool is not None:
            # A delivery under way finishes (or times out) in its thread; nothing new starts.
            self._pool.shutdown(wait=False, cancel_futures=True)


def _scrub(text: str, url: str) -> str:
    """An error text without the URL's path, query or credentials (tokens live there)."""
    parts = urlsplit(url)
    for secret in (url, parts.path, parts.query, parts.username or "", parts.password or ""):
        if len(secret) > 1:
            text = text.replace(secret, "…")
    return text
