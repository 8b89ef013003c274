"""Deploy windows at a moment: is a site's deploy held, and until when. Pure: `now` is passed in.

Argo CD's sync windows, on the `[[window]]` entries (reconciler/window_settings.py). Of the
windows whose `sites` match a domain:
- when any of them is an `allow` window, a deploy happens only while one of those is open;
- a `deny` window that is open holds it, whatever allows it (deny wins).
A pinned site (a pin, a rollback) is held only by the windows that say `pins = "hold"`.

A window is a span of wall-clock time in its own zone, starting on each of its days: "22:00-06:00"
on Friday runs from Friday 22:00 to Saturday 06:00. Spans are made per local date and turned
into UTC there, so a day on which the clocks change has a span an hour shorter or longer, as the
wall clock says (a start in the hour that does not exist is read with the offset before the
change; a span that comes out empty that day is no span).

The answer, `Hold.until`, is the first moment from which the deploy is allowed: a moment when a
deny span ends or an allow span starts (only those can allow what was held), the first of them
that is allowed. Schedules repeat every week, so two weeks ahead is far enough to look: a site
held for longer is held until the windows change (`until` None).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from reconciler.window_settings import Window

_LOOK_AHEAD_DAYS = 14


@dataclass(frozen=True)
class Hold:
    """A deploy held by a window: until `until` (UTC), or, None, until the windows change."""

    until: datetime | None

    @property
    def message(self) -> str:
        if self.until is None:
            return "held by window (no window ahead allows a deploy)"
        return f"held by window until {self.until.astimezone(UTC):%a %H:%M} UTC"


@dataclass(frozen=True)
class _Span:
    allow: bool
    start: datetime
    end: datetime

    def holds(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


def hold(windows: Sequence[Window], domain: str, now: datetime, *, pinned: bool = False) -> Hold | None:
    """None when a deploy of `domain` may happen at `now`; else the Hold. `pinned`: the move is
    a pin's or a rollback's. A naive `now` is taken as UTC."""
    now = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    mine = [w for w in windows if w.applies_to(domain) and (not pinned or w.pins == "hold")]
    if not mine:
        return None
    gated = any(w.kind == "allow" for w in mine)
    spans = [span for window in mine for span in _spans(window, now)]
    if _allowed(spans, gated, now):
        return None
    horizon = now + timedelta(days=_LOOK_AHEAD_DAYS)
    openings = sorted({s.end for s in spans if not s.allow} | {s.start for s in spans if s.allow})
    for moment in openings:
        if now < moment <= horizon and _allowed(spans, gated, moment):
            return Hold(moment)
    return Hold(None)


def _allowed(spans: Sequence[_Span], gated: bool, moment: datetime) -> bool:
    if any(not s.allow and s.holds(moment) for s in spans):
        return False
    return not gated or any(s.allow and s.holds(moment) for s in spans)


def _spans(window: Window, now: datetime) -> list[_Span]:
    """The window's spans that start from the day before `now` (an overnight span may still be
    open) until past the look-ahead (one that opens there is seen whole), in UTC."""
    zone = ZoneInfo(window.timezone)
    today = now.astimezone(zone).date()
    start_min, end_min = window.minutes
    days = window.weekdays
    found = []
    for offset in range(-2, _LOOK_AHEAD_DAYS + 2):
        day = today + timedelta(days=offset)
        if day.weekday() not in days:
            continue
        start = datetime.combine(day, _clock(start_min), zone)
        end_day = day + timedelta(days=1) if end_min <= start_min or end_min == 24 * 60 else day
        end = datetime.combine(end_day, _clock(end_min % (24 * 60)), zone)
        start_utc, end_utc = start.astimezone(UTC), end.astimezone(UTC)
        if end_utc > start_utc:
            found.append(_Span(window.kind == "allow", start_utc, end_utc))
    return found


def _clock(minutes: int) -> time:
    return time(minutes // 60, minutes % 60)
