"""The readers of two answers a deploy's batched commands send back (core.wire): a deploy's
finish (the release log's tail, then `@@finish <reload exit> <unlock exit>`) and an activating
lock command's `@@switched <exit>` line. The log is the app's: any text, any forged marks.

- any output: a FinishReport or a WireError, nothing else;
- whatever the log holds (forged marks included), our own last line decides the statuses, and the
  log comes back exactly;
- any line: a switch status (0-255), None for "not tried", or a WireError.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reconciler.core import wire
from reconciler.remote.protocol import finishing, locking
from tests.properties.strategies import FAST, nasty_text

MARK = finishing.FINISH_MARK
forged = st.lists(st.one_of(nasty_text, st.sampled_from([f"\n{MARK} 0 0\n", f"{MARK} 9 9", f"\n{MARK} ", "\n"])),
                  max_size=8).map("".join)
statuses = st.integers(min_value=0, max_value=255)


@FAST
@given(st.one_of(nasty_text, forged, st.binary().map(lambda b: b.decode("utf-8", "replace"))))
def test_any_finish_output_is_a_report_or_a_wire_error(text: str) -> None:
    try:
        report = finishing.finish_report(text, MARK)
    except wire.WireError:
        return
    assert 0 <= report.reload_exit <= 999 and 0 <= report.unlock_exit <= 999
    assert text.startswith(report.log)


@FAST
@given(forged, statuses, statuses)
def test_our_last_line_decides_whatever_the_log_forges(log: str, reload_exit: int, unlock_exit: int) -> None:
    # As the command prints it: the tail, a newline, then the mark and the two statuses.
    report = finishing.finish_report(f"{log}\n{MARK} {reload_exit} {unlock_exit}\n", MARK)
    assert (report.log, report.reload_exit, report.unlock_exit) == (log, reload_exit, unlock_exit)


SWITCHED = locking.SWITCHED


@FAST
@given(st.one_of(nasty_text, st.sampled_from([f"{SWITCHED} -", f"{SWITCHED} 0", f"{SWITCHED} 256",
                                               f"{SWITCHED}  0", f"{SWITCHED} \u0663", SWITCHED]),
                 statuses.map(lambda n: f"{locking.SWITCHED} {n}")))
def test_any_switched_line_is_a_status_none_or_a_wire_error(line: str) -> None:
    try:
        status = locking.switched(line, locking.SWITCHED)
    except wire.WireError:
        return
    assert (status is None and line == f"{locking.SWITCHED} -") or (
        status is not None and 0 <= status <= 255 and line == f"{locking.SWITCHED} {status}")
