"""remote.health.parse_results, the one reader of what a server's health command answered: any
output gives exactly one typed result per check, each detail one bounded printable line, and no
line can answer for a check it does not name (a forged or repeated answer makes that check fail)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reconciler.remote.health import MAX_REASON, HealthResult, parse_results
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
def test_each_check_reads_its_own_line_and_a_second_answer_fails_it(oks: list[bool], noise: str) -> None:
    lines = [f"{'@@healthy' if ok else '@@unhealthy'} {i} HTTP {200 if ok else 500}" for i, ok in enumerate(oks)]
    noise = " ".join(noise.splitlines())  # one line of junk before and after: never an answer of its own
    results = parse_results("\n".join([noise, *lines, noise]), len(oks))
    assert [r.ok for r in results] == oks
    repeated = parse_results("\n".join([*lines, lines[0]]), len(oks))
    assert not repeated[0].ok and "more than once" in repeated[0].detail
