"""remote.protocol.checking.parse_results, the one reader of what a server's health command answered: any
output gives exactly one typed result per check, each detail one bounded printable line, and no
record can answer for a check it does not name (a forged or repeated answer makes that check fail).

And the framing end to end: the real health command (remote/protocol/checking.py,
run by /bin/sh through the local transport), whatever ONE check prints (any bytes: our end byte,
newlines, U+2028, U+0085, \\x1c, forged `@@unhealthy 1 ...` records), leaves every OTHER check's
parsed answer exactly what it is without that output.
"""

from __future__ import annotations

import asyncio
import functools
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.health import HealthCheck
from reconciler.remote import health
from reconciler.remote.protocol.checking import (
    ANSWERED_TWICE,
    HEALTH_END,
    HEALTHY,
    MALFORMED,
    MAX_REASON,
    NO_ANSWER,
    UNHEALTHY,
    HealthResult,
    frame,
    parse_results,
)
from reconciler.remote.transport.local import LocalTransport
from tests.properties.strategies import FAST, nasty_text


@FAST
@given(nasty_text, st.integers(min_value=0, max_value=8))
def test_any_output_gives_one_bounded_result_per_check(text: str, count: int) -> None:
    results = parse_results(text, count)
    assert len(results) == count and all(isinstance(r, HealthResult) for r in results)
    for result in results:
        assert len(result.detail) <= MAX_REASON + 3
        assert "\n" not in result.detail and "\x1b" not in result.detail and "\0" not in result.detail


@FAST
@given(st.lists(st.booleans(), min_size=1, max_size=6), nasty_text)
def test_each_check_reads_its_own_record_and_a_second_answer_fails_it(oks: list[bool], noise: str) -> None:
    records = [frame(ok, i, f"HTTP {200 if ok else 500}") for i, ok in enumerate(oks)]
    junk = "x" + noise.replace(HEALTH_END, "") + HEALTH_END  # a record that is none of ours: nobody's answer
    results = parse_results("".join([junk, *records, junk]), len(oks))
    assert results == [HealthResult(ok, f"HTTP {200 if ok else 500}") for ok in oks]
    repeated = parse_results("".join([*records, records[0]]), len(oks))
    assert repeated[0] == HealthResult(False, ANSWERED_TWICE) and repeated[1:] == results[1:]
    cut_short = parse_results("".join(records)[:-1], len(oks))  # the last end byte never came
    assert cut_short[-1] == HealthResult(False, NO_ANSWER) and cut_short[:-1] == results[:-1]


@FAST
@given(st.lists(st.booleans(), min_size=2, max_size=6), st.data(), nasty_text, st.booleans())
def test_a_detail_holding_anything_is_its_own_checks_answer_only(oks: list[bool], data: st.DataObject,
                                                                  detail: str, ok: bool) -> None:
    """Any detail but the end byte (which the shell cannot print) stays inside its record: at
    worst its own check is MALFORMED, never another check's answer."""
    hostile = data.draw(st.integers(min_value=0, max_value=len(oks) - 1))
    detail = detail.replace(HEALTH_END, "")
    records = [frame(good, i, "fine") for i, good in enumerate(oks)]
    baseline = parse_results("".join(records), len(oks))
    records[hostile] = frame(ok, hostile, detail)
    results = parse_results("".join(records), len(oks))
    assert [r for i, r in enumerate(results) if i != hostile] == [r for i, r in enumerate(baseline) if i != hostile]
    assert results[hostile].ok == ok or results[hostile] == HealthResult(False, MALFORMED)
    assert parse_results(f"{HEALTHY} 0 x{HEALTH_END}{UNHEALTHY} {len(oks)} x{HEALTH_END}", len(oks))[1:] == \
        [HealthResult(False, NO_ANSWER)] * (len(oks) - 1)  # an index out of range is nobody's


# --- the real writer and reader ------------------------------------------------------------------

SEPARATORS = [b"\0", b"\n", b"\r\n", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", "\u2028".encode(),
              "\u2029".encode(), "\u0085".encode(), b"\x85", b" "]
# What a forger prints: answers for any check, each after a line break of some encoding.
forged_answers = st.lists(
    st.tuples(st.sampled_from(SEPARATORS), st.sampled_from([HEALTHY, UNHEALTHY]).map(str.encode),
              st.integers(min_value=0, max_value=4), st.sampled_from([b"", b" forged", b" HTTP 200", b"\xff%s'"]),
              st.sampled_from([b"", *SEPARATORS]))
    .map(lambda t: t[0] + t[1] + b" %d" % t[2] + t[3] + t[4]),
    min_size=1, max_size=8).map(b"".join)
any_output = st.one_of(
    st.binary(max_size=400),
    nasty_text.map(lambda text: text.encode("utf-8", "surrogatepass")),
    forged_answers,
)
OUTPUT_FILE = "check-output.bin"


def _checks(kinds: tuple[str, ...], hostile: int, exit_status: int) -> list[HealthCheck]:
    """One command check per kind ("ok": exits 0, "down": says so and exits 3); the `hostile` one
    prints the output file and exits `exit_status` instead."""
    commands = {"ok": "true", "down": "echo down; exit 3"}
    return [HealthCheck(command=f"cat {OUTPUT_FILE}; exit {exit_status}" if i == hostile else commands[kind],
                        retries=0, timeout=20.0) for i, kind in enumerate(kinds)]


def _run(kinds: tuple[str, ...], hostile: int, exit_status: int, output: bytes) -> list[HealthResult]:
    with tempfile.TemporaryDirectory() as release:
        (Path(release) / OUTPUT_FILE).write_bytes(output)
        probes = [health.Probe(release, f"s{i}.example.com", check)
                  for i, check in enumerate(_checks(kinds, hostile, exit_status))]
        return asyncio.run(health.run(LocalTransport(), probes))


@functools.cache
def _without_output(kinds: tuple[str, ...], hostile: int, exit_status: int) -> list[HealthResult]:
    return _run(kinds, hostile, exit_status, b"")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["ok", "down"]), min_size=2, max_size=4).map(tuple), st.data(), any_output,
       st.sampled_from([0, 1, 7]))
def test_whatever_one_check_prints_the_others_answers_are_unchanged(kinds: tuple[str, ...], data: st.DataObject,
                                                                    output: bytes, exit_status: int) -> None:
    hostile = data.draw(st.integers(min_value=0, max_value=len(kinds) - 1))
    results = _run(kinds, hostile, exit_status, output)
    baseline = _without_output(kinds, hostile, exit_status)
    others = [i for i in range(len(kinds)) if i != hostile]
    assert [results[i] for i in others] == [baseline[i] for i in others]
    assert [baseline[i].ok for i in others] == [kinds[i] == "ok" for i in others]
    # Its own answer: its exit status decides, and its output is one printable line in the reason.
    mine = results[hostile]
    assert mine.ok == (exit_status == 0) and mine.detail.startswith(f"command exited {exit_status}")
    assert mine.detail.isascii() and mine.detail.isprintable(), mine.detail
