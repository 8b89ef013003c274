"""Live progress of a pass for `reconcile`: which step each site is in and for how long.
On a terminal one status line is redrawn in place; piped, each step is a plain line."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO, live: bool) -> None:
        self.stream = stream
        self.live = live
        self.current: dict[str, tuple[str, float]] = {}
        self._task: asyncio.Task[None] | None = None

    def step(self, domain: str, step: str) -> None:
        self.current[domain] = (step, time.monotonic())
        if not self.live:
            print(f"{domain}: {step}", file=self.stream, flush=True)

    def finish(self, domain: str) -> None:
        self.current.pop(domain, None)

    def _draw(self) -> None:
        now = time.monotonic()
        parts = [f"{d}: {s} {now - t:.1f}s" for d, (s, t) in sorted(self.current.items())]
        width = shutil.get_terminal_size((100, 20)).columns - 1
        self.stream.write("\r\033[K" + " | ".join(parts)[:width])
        self.stream.flush()

    def clear(self) -> None:
        if self.live:
            self.stream.write("\r\033[K")
            self.stream.flush()

    async def _tick(self) -> None:
        while True:
            self._draw()
            await asyncio.sleep(0.2)

    def start(self) -> None:
        if self.live:
            self._task = asyncio.create_task(self._tick())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.clear()
