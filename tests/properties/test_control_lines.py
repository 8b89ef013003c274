"""The control socket's two readers (service.control.parse_request, parse_answer) are total and
strict: any line is a value or a ControlError, what they accept is what the writers write, and
text that reaches a terminal is printable."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.status import Health, Sync
from reconciler.service.control import (
    Answer,
    ControlError,
    Live,
    Wake,
    encode_answer,
    encode_request,
    parse_answer,
    parse_request,
)
from tests.properties.strategies import FAST, nasty_text

lines = st.one_of(nasty_text.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=200))
domains = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)


@FAST
@given(lines)
def test_any_request_line_is_a_wake_or_refused(line: bytes) -> None:
    try:
        wake = parse_request(line)
    except ControlError as exc:
        assert str(exc)
    else:
        assert wake.domains and all(d.isprintable() and d.strip() == d for d in wake.domains)
        assert wake.wait >= 0


@FAST
@given(lines)
def test_any_answer_line_is_an_answer_or_refused(line: bytes) -> None:
    try:
        answer = parse_answer(line)
    except ControlError as exc:
        assert str(exc)
    else:
        texts = [answer.error] + ([answer.outcome.message, *answer.outcome.actions] if answer.outcome else [])
        assert all(t.isprintable() for t in texts)


@FAST
@given(st.lists(domains, min_size=1, max_size=16), st.none() | st.text("0123456789abcdef", min_size=40, max_size=40),
       st.floats(0, 3600))
def test_what_the_cli_writes_the_daemon_reads(names: list[str], landed: str | None, wait: float) -> None:
    wake = Wake(tuple(names), landed, wait)
    assert parse_request(encode_request(wake)) == wake


@FAST
@given(st.sampled_from(list(Sync)), st.sampled_from(list(Health)), nasty_text, st.none() | st.text(max_size=20),
       st.lists(nasty_text, max_size=3))
def test_what_the_daemon_writes_the_cli_reads(sync: Sync, health: Health, message: str, live: str | None,
                                              actions: list[str]) -> None:
    answer = parse_answer(encode_answer(Answer(True, Live(sync, health, message, live, tuple(actions)))))
    assert answer.ok and answer.outcome is not None
    assert (answer.outcome.sync, answer.outcome.health) == (sync, health)
    assert answer.outcome.message.isprintable() and len(answer.outcome.actions) == len(actions)
