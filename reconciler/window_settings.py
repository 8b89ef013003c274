"""`[[window]]` entries of reconciler.toml: when deploys may happen (Argo CD's sync windows).

    [[window]]
    kind     = "deny"                 # or "allow"
    days     = ["fri", "sat", "sun"]  # default: every day; names or ranges ("mon-fri")
    hours    = "18:00-08:00"          # default "00:00-24:00"; an end before the start runs overnight
    timezone = "Europe/Berlin"        # default "UTC": the hours are this zone's wall clock
    sites    = ["*.shop.example"]     # globs over domains, at least one
    pins     = "pass"                 # default; "hold": pins and rollbacks wait for it too

Validated here, below `core`, as the rest of the configuration (a mistake is a ConfigError naming
the entry and key); what a window means at a given moment is core/windows.py's, which is pure.
A window starts on each of its `days` at the start of `hours`; an overnight window that starts
on Friday ends on Saturday morning.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = datetime.weekday()
WHOLE_DAY = "00:00-24:00"
_FULL = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_HOURS = re.compile(r"(\d\d):(\d\d)-(\d\d):(\d\d)")
_GLOB = re.compile(r"[a-z0-9.*?\[\]!-]+")  # a domain's characters and fnmatch's


def _day(name: str) -> int:
    key = name.strip().lower()
    for names in (DAYS, _FULL):
        if key in names:
            return names.index(key)
    raise ValueError(f"{name[:20]!r} is not a day: use {' '.join(DAYS)} (or a range such as mon-fri)")


class Window(BaseModel):
    """One `[[window]]` entry (see the module's docstring)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    kind: Literal["allow", "deny"] = Field(description='"allow": deploys happen only inside; "deny": never inside.')
    days: list[str] = Field(
        default=list(DAYS), description='Days it applies to: mon tue wed thu fri sat sun, or ranges such as mon-fri.')
    hours: str = Field(default=WHOLE_DAY, description='Hours of those days, "HH:MM-HH:MM".')
    timezone: str = Field(default="UTC", description='The IANA time zone of days and hours.')
    sites: list[str] = Field(description='Domains (fnmatch globs) it applies to.')
    pins: Literal["pass", "hold"] = Field(
        default="pass", description='"pass": pins (rollback, unpin) go through; "hold": they wait too.')

    @field_validator("days")
    @classmethod
    def _days(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must name at least one day (leave it out for every day)")
        for entry in value:
            first, dash, last = entry.partition("-")
            _day(first)
            if dash:
                _day(last)
        return value

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: str) -> str:
        found = _HOURS.fullmatch(value.strip())
        bad = f'{value[:20]!r} is not an hour range: "HH:MM-HH:MM" in 24-hour time, such as "09:00-17:00" ' \
              'or, overnight, "22:00-06:00"'
        if found is None:
            raise ValueError(bad)
        start_h, start_m, end_h, end_m = map(int, found.groups())
        if start_h > 23 or end_h > 24 or start_m > 59 or end_m > 59 or (end_h == 24 and end_m):
            raise ValueError(bad)
        if (start_h, start_m) == (end_h, end_m):
            raise ValueError(f'{value!r} is empty: the whole day is "{WHOLE_DAY}"')
        return value.strip()

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value[:40]!r} is not a known time zone: an IANA name such as "
                             "Europe/Berlin, America/New_York or UTC") from None
        return value

    @field_validator("sites")
    @classmethod
    def _sites(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError('must name at least one site or glob (["*"] for every site)')
        for glob in value:
            if not _GLOB.fullmatch(glob):
                raise ValueError(f"{glob[:60]!r} is not a domain glob: lower-case letters, digits, '.', '-' and "
                                 "the wildcards * ? [ ]")
        return value

    @property
    def weekdays(self) -> frozenset[int]:
        """The days a window starts on, as `datetime.weekday()` numbers."""
        found: set[int] = set()
        for entry in self.days:
            first, dash, last = entry.partition("-")
            start, end = _day(first), _day(last if dash else first)
            found.update((start + step) % 7 for step in range((end - start) % 7 + 1))
        return frozenset(found)

    @property
    def minutes(self) -> tuple[int, int]:
        """(start, end) in minutes after midnight; end <= start: it ends the next day."""
        start_h, start_m, end_h, end_m = map(int, _HOURS.fullmatch(self.hours).groups())  # type: ignore[union-attr]
        return start_h * 60 + start_m, end_h * 60 + end_m

    def applies_to(self, domain: str) -> bool:
        return any(fnmatchcase(domain, glob) for glob in self.sites)
