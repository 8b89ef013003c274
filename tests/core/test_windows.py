"""core/windows.py: whether deploy windows hold a site's deploy at a moment, and until when. A
table of moments (days, overnight spans, allow and deny together, site globs, pins, the two
days a year the clocks change), and a property over any windows and any moment: the answer is
a Hold or None, never an exception; a Hold's `until` lies ahead, the deploy is allowed then and
held everywhere before it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.windows import Hold, hold
from reconciler.window_settings import DAYS, Window

SITE = "shop.example.com"


def window(kind: str = "deny", **fields: Any) -> Window:
    return Window.model_validate({"kind": kind, "sites": ["*"], **fields})


def at(text: str) -> datetime:
    """A UTC moment written as "2026-12-07 09:00" (7 December 2026 is a Monday)."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


OFFICE = window("allow", days=["mon-fri"], hours="09:00-17:00")
FRIDAY_NIGHT = window("deny", days=["fri"], hours="22:00-06:00")
BERLIN_NIGHTS = window("deny", hours="22:00-06:00", timezone="Europe/Berlin")

CASES = [
    # (what, windows, now, until: None = not held, "never" = held with no end ahead)
    ("no window: never held", [], "2026-12-07 03:00", None),
    ("inside an allow window", [OFFICE], "2026-12-07 12:00", None),
    ("before an allow window opens", [OFFICE], "2026-12-07 08:59", "2026-12-07 09:00"),
    ("an allow window's end is not in it", [OFFICE], "2026-12-07 17:00", "2026-12-08 09:00"),
    ("a weekend waits for Monday", [OFFICE], "2026-12-05 12:00", "2026-12-07 09:00"),
    ("an overnight deny started on its day", [FRIDAY_NIGHT], "2026-12-04 23:30", "2026-12-05 06:00"),
    ("an overnight deny runs into the next day", [FRIDAY_NIGHT], "2026-12-05 05:59", "2026-12-05 06:00"),
    ("after the overnight deny", [FRIDAY_NIGHT], "2026-12-05 06:00", None),
    ("the overnight deny of another day", [FRIDAY_NIGHT], "2026-12-04 05:00", None),
    ("deny wins over allow, then allow decides",
     [OFFICE, window("deny", days=["mon"], hours="08:00-10:00")], "2026-12-07 09:30", "2026-12-07 10:00"),
    ("a deny that ends after the allow closes waits for the next allow",
     [OFFICE, window("deny", days=["mon"], hours="16:00-18:00")], "2026-12-07 16:30", "2026-12-08 09:00"),
    ("overlapping denies: the later end", [window(hours="08:00-10:00"), window(hours="09:00-11:00")],
     "2026-12-07 09:30", "2026-12-07 11:00"),
    ("a deny of every day and hour holds with no end", [window()], "2026-12-07 09:30", "never"),
    ("an allow window in its own zone (09:00 Berlin is 08:00 UTC in winter)",
     [window("allow", hours="09:00-17:00", timezone="Europe/Berlin")], "2026-12-07 07:00", "2026-12-07 08:00"),
    ("the same in summer (09:00 Berlin is 07:00 UTC)",
     [window("allow", hours="09:00-17:00", timezone="Europe/Berlin")], "2026-07-06 06:00", "2026-07-06 07:00"),
    # Clocks go forward at 01:00 UTC on 29 March 2026 in Berlin: the night is an hour shorter.
    ("spring forward: the night ends at 06:00 summer time", [BERLIN_NIGHTS], "2026-03-29 03:00",
     "2026-03-29 04:00"),
    ("spring forward: the night before ends at 06:00 winter time", [BERLIN_NIGHTS], "2026-03-28 04:30",
     "2026-03-28 05:00"),
    # Clocks go back at 01:00 UTC on 25 October 2026: the night is an hour longer.
    ("fall back: the night ends at 06:00 winter time", [BERLIN_NIGHTS], "2026-10-25 04:30", "2026-10-25 05:00"),
    ("fall back: it starts at 22:00 summer time", [BERLIN_NIGHTS], "2026-10-24 20:00", "2026-10-25 05:00"),
    ("fall back: not yet started", [BERLIN_NIGHTS], "2026-10-24 19:59", None),
    # 02:30 does not exist in Berlin on 29 March: a window starting then starts at 01:30 UTC
    # (read with the offset before the change) and ends at 03:00 summer time, 01:00 UTC: no span.
    ("a span in the hour that does not exist is no span",
     [window("allow", days=["sun"], hours="02:30-03:00", timezone="Europe/Berlin")], "2026-03-29 00:30",
     "2026-04-05 00:30"),
]


@pytest.mark.parametrize(("windows", "now", "until"), [pytest.param(w, n, u, id=i) for i, w, n, u in CASES])
def test_a_deploy_is_held_until_the_first_moment_the_windows_allow_it(windows: list[Window], now: str,
                                                                      until: str | None) -> None:
    found = hold(windows, SITE, at(now))
    if until is None:
        assert found is None
    else:
        assert found == Hold(None if until == "never" else at(until))


def test_only_the_windows_whose_globs_match_the_site_count() -> None:
    night = window(sites=["*.example.org", "blog.example.com"])
    assert hold([night], SITE, at("2026-12-07 03:00")) is None
    assert hold([night], "blog.example.com", at("2026-12-07 03:00")) == Hold(None)
    assert hold([night], "shop.example.org", at("2026-12-07 03:00")) == Hold(None)
    # An allow window for other sites does not gate this one.
    assert hold([window("allow", hours="09:00-10:00", sites=["*.example.org"])], SITE, at("2026-12-07 03:00")) is None


def test_pins_and_rollbacks_pass_unless_the_window_holds_them_too() -> None:
    moment = at("2026-12-07 03:00")
    assert hold([window()], SITE, moment, pinned=True) is None
    assert hold([window("allow", hours="09:00-10:00")], SITE, moment, pinned=True) is None
    assert hold([window(pins="hold", hours="00:00-06:00")], SITE, moment, pinned=True) == Hold(at("2026-12-07 06:00"))


def test_the_message_names_the_day_and_time_in_utc() -> None:
    assert Hold(at("2026-12-07 09:00")).message == "held by window until Mon 09:00 UTC"
    berlin = datetime(2026, 12, 7, 10, 0, tzinfo=UTC).astimezone(timezone(timedelta(hours=1)))
    assert Hold(berlin).message == "held by window until Mon 10:00 UTC"
    assert Hold(None).message == "held by window (no window ahead allows a deploy)"


def test_a_naive_moment_is_taken_as_utc() -> None:
    assert hold([OFFICE], SITE, datetime(2026, 12, 7, 8, 0)) == Hold(at("2026-12-07 09:00"))


ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "Pacific/Chatham",
         "America/Santiago", "Africa/Casablanca"]


def _hours(start: int, end: int) -> str:
    return f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"


windows_strategy = st.builds(
    lambda kind, days, span, zone, pins, mine: Window.model_validate({
        "kind": kind, "days": days, "hours": _hours(*span), "timezone": zone, "pins": pins,
        "sites": ["*"] if mine else ["other.example.org"]}),
    st.sampled_from(["allow", "deny"]),
    st.lists(st.sampled_from(DAYS), min_size=1, max_size=7, unique=True),
    st.tuples(st.integers(0, 24 * 60 - 1).map(lambda m: m - m % 15), st.integers(1, 24 * 60).map(
        lambda m: m - m % 15 or 15)).filter(lambda span: span[0] != span[1]),
    st.sampled_from(ZONES), st.sampled_from(["pass", "hold"]), st.booleans())

moments = st.datetimes(min_value=datetime(1980, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))


@settings(max_examples=300, deadline=None)
@given(st.lists(windows_strategy, max_size=4), moments, st.booleans())
def test_any_windows_at_any_moment_answer_with_a_hold_whose_end_is_the_first_allowed_moment(
        windows: list[Window], now: datetime, pinned: bool) -> None:
    found = hold(windows, SITE, now, pinned=pinned)
    assert found is None or isinstance(found, Hold)
    if found is None or found.until is None:
        return
    assert found.until > now and found.until.tzinfo is not None
    assert hold(windows, SITE, found.until, pinned=pinned) is None, "allowed at `until`"
    middle = now + (found.until - now) / 2
    assert hold(windows, SITE, middle, pinned=pinned) is not None, "held before `until`"
    assert hold(windows, SITE, found.until - timedelta(microseconds=1), pinned=pinned) is not None
