"""reconciler.faults: a checkpoint is inert unless RECONCILER_FAULT names its step; then the process
SIGKILLs itself on reaching it, or, with `step:seconds`, goes on into the step and is killed that
long after. Each case runs in a child interpreter (the kill is real)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from reconciler.faults import STEPS

# Reaches two checkpoints, printing before and after each, then sleeps as a step would.
CHILD = """
import sys, time
from reconciler.faults import checkpoint
print("before", flush=True)
checkpoint(sys.argv[1])
print("after", flush=True)
checkpoint(sys.argv[2])
print("passed", flush=True)
time.sleep(float(sys.argv[3]))
print("done", flush=True)
"""


def run(fault: str | None, first: str, second: str, sleep: float = 0.0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RECONCILER_FAULT"}
    if fault is not None:
        env["RECONCILER_FAULT"] = fault
    return subprocess.run([sys.executable, "-c", CHILD, first, second, str(sleep)], env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("fault", [None, "", "prune", "Clone", "clones:0.1"])
def test_a_checkpoint_not_named_does_nothing(fault: str | None) -> None:
    result = run(fault, "clone", "script")
    assert (result.returncode, result.stdout.split()) == (0, ["before", "after", "passed", "done"]), result


@pytest.mark.parametrize("step", STEPS)
def test_the_named_step_kills_the_process_where_it_is_reached(step: str) -> None:
    other = next(s for s in STEPS if s != step)
    result = run(step, other, step)
    assert result.returncode == -signal.SIGKILL, result
    assert result.stdout.split() == ["before", "after"]


def test_a_delay_lets_the_step_begin_and_kills_it_part_way() -> None:
    result = run("script:0.3", "script", "clone", sleep=30)
    assert result.returncode == -signal.SIGKILL, result
    assert result.stdout.split() == ["before", "after", "passed"]
