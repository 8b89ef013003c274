"""The transport interface (remote/transport/base.py): a Result's success and tail, and what
every transport inherits (a round-trip count that starts at zero, a close that does nothing)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from reconciler.remote.transport.base import Result, Transport


class Echo(Transport):
    """A transport of this test's own: answers every command with the command itself."""

    name = "echo"

    async def run(self, command: str, *, timeout: float, stdin: str | None = None, tied: bool = False) -> Result:
        self._round_trips += 1
        return Result(0, command, stdin or "")


def test_only_exit_status_zero_is_ok() -> None:
    assert Result(0, "", "boom").ok
    assert not Result(1, "fine", "").ok
    assert not Result(126, "", "").ok


def test_tail_is_the_last_lines_of_stdout_then_stderr() -> None:
    result = Result(1, "one\ntwo\nthree\n", "err one\nerr two\n\n")
    assert result.tail(2) == "err one\nerr two"
    assert result.tail(4) == "two\nthree\nerr one\nerr two"
    assert result.tail() == "one\ntwo\nthree\nerr one\nerr two"
    assert Result(0, "", "").tail() == ""


def test_a_result_is_a_value() -> None:
    assert Result(0, "a", "b") == Result(0, "a", "b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        Result(0, "a", "b").exit_status = 1  # type: ignore[misc]


def test_round_trips_count_per_transport_from_zero_and_close_needs_no_override() -> None:
    first, second = Echo(), Echo()
    assert (first.round_trips, second.round_trips) == (0, 0)

    async def body() -> Result:
        result = await first.run("echo hi", timeout=1, stdin="in")
        await first.run("true", timeout=1)
        await first.close()
        return result

    assert asyncio.run(body()) == Result(0, "echo hi", "in")
    assert (first.round_trips, second.round_trips) == (2, 0)


def test_a_transport_must_implement_run() -> None:
    with pytest.raises(TypeError):
        Transport()  # type: ignore[abstract]
