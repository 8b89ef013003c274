"""A command that acts gets a Reconciler of its own (cli.acting): on the read-write state
database (created when missing), with the command's settings, and its database closed when the
work ends, whether the work returned or raised. Real SQLite, settings from a real config file."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from reconciler.cli.acting import act, acting
from reconciler.cli.invocation import Invocation
from reconciler.engine.converge import Reconciler
from reconciler.errors import ReconcilerError


def _invocation(tmp_path: Path) -> Invocation:
    return Invocation(None, {"repo": str(tmp_path / "decl"), "state_dir": str(tmp_path / "state")})


def _closed(reconciler: Reconciler) -> bool:
    try:
        reconciler.store.db.execute("select 1")
    except sqlite3.ProgrammingError:
        return True
    return False


def test_act_returns_the_work_s_result_and_closes_the_database(tmp_path: Path) -> None:
    seen: list[Reconciler] = []

    async def work(reconciler: Reconciler) -> str:
        seen.append(reconciler)
        reconciler.store.set_meta("probe", "acted")
        return "done"

    assert act(_invocation(tmp_path), work) == "done"
    (reconciler,) = seen
    assert reconciler.settings.state_dir == tmp_path / "state"
    assert _closed(reconciler)
    with sqlite3.connect(tmp_path / "state" / "reconciler.db") as db:
        assert db.execute("select value from meta where key = 'probe'").fetchone() == ("acted",)


def test_the_database_is_closed_when_the_work_raises(tmp_path: Path) -> None:
    seen: list[Reconciler] = []

    async def work(reconciler: Reconciler) -> None:
        seen.append(reconciler)
        raise ReconcilerError("refused")

    with pytest.raises(ReconcilerError, match="refused"):
        act(_invocation(tmp_path), work)
    assert _closed(seen[0])


def test_acting_opens_one_reconciler_per_use(tmp_path: Path) -> None:
    async def twice() -> tuple[Reconciler, Reconciler]:
        async with acting(_invocation(tmp_path)) as first:
            pass
        async with acting(_invocation(tmp_path)) as second:
            assert not _closed(second)
        return first, second

    first, second = asyncio.run(twice())
    assert first is not second and _closed(first) and _closed(second)
