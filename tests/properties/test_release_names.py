"""Release names read from a server: any string of the
ddMMYYYY-HHMMSS shape, real date or not, is a release time or not one (`parse_release`), and a
next name is computed after any of them or refused with a typed error (`next_release_name`),
never another exception (an OverflowError after `31129999-235959` printed a traceback)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.layout import next_release_name, parse_release
from reconciler.errors import PermanentError
from tests.properties.strategies import FAST

LAST = "31129999-235959"

digits = st.text(alphabet="0123456789", min_size=1, max_size=1)
shaped = st.builds(lambda d, t: d + "-" + t,
                   st.lists(digits, min_size=8, max_size=8).map("".join),
                   st.lists(digits, min_size=6, max_size=6).map("".join))
# Real times of every year, written with four year digits (strftime would not pad year 5).
real = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)).map(
    lambda m: f"{m:%d%m}{m.year:04d}-{m:%H%M%S}")
near_the_end = st.integers(0, 86399).map(lambda s: f"31129999-{s // 3600:02d}{s // 60 % 60:02d}{s % 60:02d}")
names = st.one_of(shaped, real, near_the_end, st.sampled_from([LAST, "00000000-000000", "29022023-000000",
                                                                "29022024-240000", "31129999-235960"]))
nows = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59),
                    timezones=st.just(UTC))


@FAST
@given(st.lists(names, max_size=4), nows)
def test_any_release_names_give_a_next_name_or_a_typed_error(existing: list[str], now: datetime) -> None:
    times = [t for name in existing if (t := parse_release(name)) is not None]
    assert all(isinstance(t, datetime) and t.tzinfo is UTC for t in times)
    try:
        name = next_release_name(now, existing)
    except PermanentError as exc:
        # Only a release at the very last second leaves no later name, and the message says which.
        assert LAST in existing and LAST in str(exc), (existing, exc)
        return
    fresh = parse_release(name)
    assert fresh is not None, name
    assert fresh >= now.replace(microsecond=0), (name, now)
    assert all(fresh > t for t in times), (name, existing)
