"""`[[notify]]`: JSON POSTs of events (deployed, failed, rolled_back, degraded) to webhooks.

Sent from background tasks, retried with backoff, never blocking a deploy. `deployed` is
sent once per (site, commit); the others once per change of state.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import aiohttp

from reconciler.config import NotifyTarget

log = logging.getLogger(__name__)

ATTEMPTS = 5
FIRST_DELAY = 1.0


class Notifications:
    def __init__(self, targets: list[NotifyTarget], first_delay: float = FIRST_DELAY) -> None:
        self.targets = targets
        self.first_delay = first_delay
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._sent: set[tuple[str, ...]] = set()

    def emit(self, event: str, domain: str, once_key: str = "", **fields: Any) -> None:
        """Queue `event` for every target that wants it; `once_key` deduplicates."""
        key = (event, domain, once_key)
        if once_key and key in self._sent:
            return
        self._sent.add(key)
        payload = {"event": event, "domain": domain,
                   "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), **fields}
        for target in self.targets:
            if event in target.events:
                task = asyncio.create_task(self._post(target.url, payload))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def forget(self, event: str, domain: str) -> None:
        """State changed back: the next `event` for `domain` is news again."""
        self._sent = {k for k in self._sent if not (k[0] == event and k[1] == domain)}

    async def _post(self, url: str, payload: dict[str, Any]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        delay = self.first_delay
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with self._session.post(url, json=payload) as response:
                    if response.status < 300:
                        return
                    problem = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = str(exc) or type(exc).__name__
            if attempt == ATTEMPTS:
                log.warning("notify %s: giving up on %s for %s: %s", url, payload["event"], payload["domain"],
                            problem)
                return
            await asyncio.sleep(delay)
            delay *= 2

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
