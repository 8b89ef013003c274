"""Fault-injection checkpoints: the seam the fault suite (tests/faults/) uses to kill a real
reconciler process at an exact step of a deploy.

`RECONCILER_FAULT="step"` makes the process SIGKILL itself when it reaches `step`;
`"step:0.2"` arms a timer instead, so the kill lands 0.2 s *into* the step (mid-clone,
mid-script). Unset, as in production, a checkpoint is one environment lookup.
"""

from __future__ import annotations

import os
import signal
import threading

STEPS = ("clone", "after-build", "script", "before-switch", "after-switch", "prune")


def checkpoint(step: str) -> None:
    spec = os.environ.get("RECONCILER_FAULT")
    if not spec:
        return
    name, _, delay = spec.partition(":")
    if name != step:
        return
    if delay:
        timer = threading.Timer(float(delay), os.kill, (os.getpid(), signal.SIGKILL))
        timer.daemon = True
        timer.start()
    else:
        os.kill(os.getpid(), signal.SIGKILL)
