"""remote.protocol.doctoring.parse_answers, the one reader of what a server's doctor command
answered: any output gives exactly one typed answer per check, each detail one bounded
printable line, and no record answers for a check it does not name.

And end to end: the real doctor command (run by /bin/sh through the local transport) with any
bytes in a file the server controls (its php-fpm.conf's process_control_timeout, read into that
check's detail: forged records, NUL, line breaks of any encoding) leaves every OTHER check's
answer exactly what it is without them."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.remote.protocol.doctoring import (
    END,
    MALFORMED,
    MAX_DETAIL,
    MISSING,
    NO_ANSWER,
    OK,
    Answer,
    Check,
    Kind,
    doctor,
    frame,
    parse_answers,
)
from reconciler.remote.transport.local import LocalTransport
from tests.properties.strategies import FAST, nasty_text


@FAST
@given(nasty_text, st.integers(min_value=0, max_value=8))
def test_any_output_gives_one_bounded_answer_per_check(text: str, count: int) -> None:
    answers = parse_answers(text, count)
    assert len(answers) == count and all(isinstance(a, Answer) for a in answers)
    for answer in answers:
        assert len(answer.detail) <= MAX_DETAIL
        assert all(" " <= c <= "~" for c in answer.detail), answer


@FAST
@given(st.lists(st.booleans(), min_size=2, max_size=6), st.data(), nasty_text, st.booleans())
def test_a_detail_holding_anything_is_its_own_checks_answer_only(oks: list[bool], data: st.DataObject,
                                                                  detail: str, ok: bool) -> None:
    hostile = data.draw(st.integers(min_value=0, max_value=len(oks) - 1))
    records = [frame(good, i, "fine") for i, good in enumerate(oks)]
    baseline = parse_answers("".join(records), len(oks))
    records[hostile] = frame(ok, hostile, detail.replace(END, ""))
    answers = parse_answers("".join(records), len(oks))
    assert [a for i, a in enumerate(answers) if i != hostile] == [a for i, a in enumerate(baseline) if i != hostile]
    assert answers[hostile].ok == ok or answers[hostile] == Answer(False, MALFORMED)
    assert parse_answers(f"{OK} 0 x{END}{MISSING} {len(oks)} x{END}", len(oks))[1:] == \
        [Answer(False, NO_ANSWER)] * (len(oks) - 1)  # an index out of range is nobody's


# --- the real writer and reader ------------------------------------------------------------------

SEPARATORS = [b"\0", b"\n", b"\r\n", b"\x0b", b"\x1c", "\u2028".encode(), "\u0085".encode(), b"\x85", b" "]
forged = st.lists(st.tuples(st.sampled_from(SEPARATORS), st.sampled_from([OK, MISSING]).map(str.encode),
                            st.integers(min_value=0, max_value=3), st.sampled_from([b"", b" forged", b"\xff%s'"]))
                  .map(lambda t: t[0] + t[1] + b" %d" % t[2] + t[3]), min_size=1, max_size=6).map(b"".join)
value_bytes = st.one_of(st.binary(max_size=300), forged,
                        nasty_text.map(lambda text: text.encode("utf-8", "surrogatepass")))


def _run(value: bytes) -> list[Answer]:
    with tempfile.TemporaryDirectory() as where:
        conf = Path(where) / "php-fpm.conf"
        conf.write_bytes(b"[global]\nprocess_control_timeout = " + value + b"\n")
        checks = [Check(Kind.PROGRAM, ("sh",)), Check(Kind.FPM, (str(conf),)), Check(Kind.DISK, (where, "1")),
                  Check(Kind.PROGRAM, ("no-such-program-here",))]
        command = doctor(checks, 5)
        result = asyncio.run(LocalTransport().run(command.text, stdin=command.stdin, timeout=60))
        assert result.ok, result.stderr
        answers = parse_answers(result.stdout, len(checks))
        return [answers[0], answers[2], answers[3]]  # the disk detail names the temporary directory


@settings(max_examples=40, deadline=None)
@given(value_bytes)
def test_what_a_server_file_holds_never_changes_another_checks_answer(value: bytes) -> None:
    others = _run(value)
    assert [a.ok for a in others] == [True, True, False]
    assert others[0].detail.endswith("/sh") and others[2].detail.startswith("not found on PATH")
