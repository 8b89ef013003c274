"""reconciler/window_settings.py: a `[[window]]` entry as validated. Days by name, full name or
range (wrapping over the week end), hours as "HH:MM-HH:MM" with overnight spans and 24:00 as an
end, a time zone zoneinfo knows, at least one site glob; every mistake refused with what to write
instead."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from reconciler.window_settings import Window


def window(**fields: Any) -> Window:
    return Window.model_validate({"kind": "deny", "sites": ["*"], **fields})


def test_the_defaults_are_every_day_all_day_in_utc_and_pins_pass() -> None:
    found = window()
    assert found.weekdays == frozenset(range(7)) and found.minutes == (0, 24 * 60)
    assert (found.timezone, found.pins) == ("UTC", "pass")


@pytest.mark.parametrize(("days", "weekdays"), [
    (["mon-fri"], {0, 1, 2, 3, 4}),
    (["Sat", "sunday"], {5, 6}),
    (["fri-mon"], {4, 5, 6, 0}),
    (["wed", "wed-wed"], {2}),
])
def test_days_are_names_or_ranges(days: list[str], weekdays: set[int]) -> None:
    assert window(days=days).weekdays == weekdays


@pytest.mark.parametrize(("hours", "minutes"), [
    ("09:00-17:00", (540, 1020)),
    ("22:00-06:00", (1320, 360)),
    ("18:30-24:00", (1110, 1440)),
    (" 00:00-24:00 ", (0, 1440)),
])
def test_hours_are_a_wall_clock_range_overnight_when_the_end_comes_first(hours: str, minutes: tuple[int, int]) -> None:
    assert window(hours=hours).minutes == minutes


@pytest.mark.parametrize(("fields", "says"), [
    ({"days": ["funday"]}, "'funday' is not a day: use mon tue wed thu fri sat sun"),
    ({"days": ["mon-someday"]}, "'someday' is not a day"),
    ({"days": []}, "at least one day"),
    ({"hours": "9-17"}, '"HH:MM-HH:MM" in 24-hour time'),
    ({"hours": "09:00-25:00"}, '"HH:MM-HH:MM"'),
    ({"hours": "24:00-06:00"}, '"HH:MM-HH:MM"'),
    ({"hours": "09:60-10:00"}, '"HH:MM-HH:MM"'),
    ({"hours": "24:30-24:30"}, '"HH:MM-HH:MM"'),
    ({"hours": "09:00-09:00"}, 'is empty: the whole day is "00:00-24:00"'),
    ({"timezone": "Mars/Olympus_Mons"}, "'Mars/Olympus_Mons' is not a known time zone"),
    ({"timezone": "../../etc/passwd"}, "is not a known time zone"),
    ({"sites": []}, "at least one site or glob"),
    ({"sites": ["Shop Example"]}, "is not a domain glob"),
    ({"kind": "maybe"}, "'allow' or 'deny'"),
    ({"pins": True}, "'pass' or 'hold'"),
    ({"sites": "*"}, "valid list"),
    ({"day": ["mon"]}, "Extra inputs are not permitted"),
])
def test_a_bad_entry_is_refused_saying_what_to_write(fields: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=says.replace("(", r"\(").replace("*", r"\*")):
        window(**fields)


def test_sites_are_globs_over_domains() -> None:
    found = window(sites=["*.example.org", "shop.example.com", "web-?.example.net"])
    assert found.applies_to("a.b.example.org") and found.applies_to("shop.example.com")
    assert found.applies_to("web-1.example.net")
    assert not found.applies_to("example.org") and not found.applies_to("blog.example.com")
