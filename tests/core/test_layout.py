"""Table-driven tests of reconciler.core.layout: release names, ordering, paths and quoting (SPEC §3)."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from reconciler.core.layout import (
    LOG_NAME,
    MANIFEST_NAME,
    SitePaths,
    is_release,
    next_release_name,
    parse_release,
    release_name,
    shared_link_target,
    sort_releases,
)
from reconciler.remote.protocol.seam import quote


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# --------------------------------------------------------------------------- parse_release


@pytest.mark.parametrize(
    ("name", "moment"),
    [
        ("31072025-143022", utc(2025, 7, 31, 14, 30, 22)),
        ("01082025-091245", utc(2025, 8, 1, 9, 12, 45)),
        ("29022024-000000", utc(2024, 2, 29, 0, 0, 0)),  # leap day in a leap year
        ("01011970-000000", utc(1970, 1, 1, 0, 0, 0)),
        ("31122099-235959", utc(2099, 12, 31, 23, 59, 59)),
        ("15062000-120000", utc(2000, 6, 15, 12, 0, 0)),  # 2000 is a leap century, valid anyway
    ],
)
def test_parse_release_valid(name: str, moment: datetime) -> None:
    assert parse_release(name) == moment
    assert parse_release(name).tzinfo is not None  # type: ignore[union-attr]
    assert is_release(name)
    assert release_name(moment) == name  # round trip


@pytest.mark.parametrize(
    "name",
    [
        "31022025-101010",  # 31 February
        "30022024-101010",  # 30 February, leap year
        "29022025-120000",  # 29 February, not a leap year
        "29021900-120000",  # 1900 is not a leap year
        "31042025-000000",  # 31 April
        "32012025-000000",  # day 32
        "00012025-000000",  # day 0
        "01002025-000000",  # month 0
        "01132025-000000",  # month 13
        "01012025-240000",  # hour 24
        "01012025-126000",  # minute 60
        "01012025-120060",  # second 60
        "01012025-120099",
        "2025-07-31",
        "20250731-143022",  # ISO order is not the format (month 07 ok, but day 20 month 25)
        "3107202-143022",
        "310720251-43022",
        "31072025_143022",
        "31072025143022",
        "31072025-1430221",
        "31072025-14302",
        "31072025-143022\n",
        "31072025-143022 ",
        " 31072025-143022",
        "x31072025-143022",
        "",
        "shared",
        "junk",
        ".reconciler-lock",
        "abcdefgh-ijklmn",
        "3107 025-143022",
        "+1072025-143022",
        "31072025-+43022",
        # Non-ASCII digits: `\d` in a str regex and strptime both accept them, but a release name is
        # ASCII `ddMMYYYY-HHMMSS` (the server-side glob is [0-9]); such a name is not a release.
        "1\u0665072025-143022",  # ARABIC-INDIC DIGIT FIVE
        "\uff13\uff11\uff10\uff17\uff12\uff10\uff12\uff15-\uff11\uff14\uff13\uff10\uff12\uff12",  # fullwidth
        "3107202\u0665-143022",
    ],
)
def test_parse_release_invalid(name: str) -> None:
    assert parse_release(name) is None
    assert not is_release(name)


@pytest.mark.parametrize(
    ("moment", "name"),
    [
        (utc(2025, 7, 31, 14, 30, 22), "31072025-143022"),
        # other time zones are converted to UTC
        (datetime(2025, 8, 1, 2, 0, 0, tzinfo=timezone(timedelta(hours=3))), "31072025-230000"),
        (datetime(2025, 12, 31, 20, 0, 0, tzinfo=timezone(timedelta(hours=-5))), "01012026-010000"),
        (utc(2025, 1, 2, 3, 4, 5, 999999), "02012025-030405"),  # microseconds dropped
    ],
)
def test_release_name(moment: datetime, name: str) -> None:
    assert release_name(moment) == name


# --------------------------------------------------------------------------- ordering


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        # ddMMYYYY: string order and time order disagree
        (["01082025-091245", "31072025-143022"], ["31072025-143022", "01082025-091245"]),
        (["31122024-235959", "01012025-000000"], ["31122024-235959", "01012025-000000"]),
        (
            ["01012026-000000", "15062025-120000", "02012025-000000", "31122024-235959", "15062025-115959"],
            ["31122024-235959", "02012025-000000", "15062025-115959", "15062025-120000", "01012026-000000"],
        ),
        # the year dominates even though it is last in the name
        (["01012030-000000", "31121999-235959", "15062010-000000"],
         ["31121999-235959", "15062010-000000", "01012030-000000"]),
        # names that are not releases (or not real dates) are dropped
        (["shared", "31022025-101010", "01082025-091245", "junk", "31072025-143022", ""],
         ["31072025-143022", "01082025-091245"]),
        ([], []),
        (["shared"], []),
    ],
)
def test_sort_releases_by_encoded_time(names: list[str], expected: list[str]) -> None:
    assert sort_releases(names) == expected
    assert sort_releases(reversed(names)) == expected  # input order does not matter


def test_sort_releases_is_not_string_order() -> None:
    names = ["01082025-091245", "31072025-143022", "15012024-000000"]
    assert sort_releases(names) != sorted(names)
    assert sort_releases(names) == ["15012024-000000", "31072025-143022", "01082025-091245"]


NOW = utc(2025, 8, 1, 9, 12, 45)


@pytest.mark.parametrize(
    ("now", "existing", "expected"),
    [
        pytest.param(NOW, [], "01082025-091245", id="empty"),
        pytest.param(utc(2025, 8, 1, 9, 12, 45, 700000), [], "01082025-091245", id="microseconds-truncated"),
        pytest.param(NOW, ["31072025-143022"], "01082025-091245", id="older-existing"),
        pytest.param(NOW, ["01082025-091245"], "01082025-091246", id="same-second-collision"),
        pytest.param(NOW, ["01082025-091245", "01082025-091246"], "01082025-091247", id="two-collisions"),
        pytest.param(NOW, ["05082025-000000"], "05082025-000001", id="clock-behind-existing"),
        # string max is "31122024-235959", time max is "01012025-000005": must beat the time max
        pytest.param(utc(2025, 1, 1, 0, 0, 0), ["31122024-235959", "01012025-000005"], "01012025-000006",
                     id="string-order-differs"),
        pytest.param(utc(2025, 12, 31, 23, 59, 59), ["31122025-235959"], "01012026-000000", id="year-rollover"),
        pytest.param(utc(2024, 2, 28, 23, 59, 59), ["28022024-235959"], "29022024-000000", id="leap-day"),
        pytest.param(NOW, ["shared", "junk", "31022025-101010"], "01082025-091245", id="non-releases-ignored"),
        pytest.param(datetime(2025, 8, 1, 12, 12, 45, tzinfo=timezone(timedelta(hours=3))), [],
                     "01082025-091245", id="non-utc-now"),
    ],
)
def test_next_release_name(now: datetime, existing: list[str], expected: str) -> None:
    name = next_release_name(now, existing)
    assert name == expected
    assert name not in existing
    assert is_release(name)


@pytest.mark.parametrize(
    "existing",
    [
        [],
        ["01082025-091245"],
        ["31122030-235959", "01012025-000000"],
        ["01082025-091244", "01082025-091245", "01082025-091246"],
        ["31072025-143022", "01082025-091245", "02082025-000000", "01012026-000000"],
        [release_name(NOW + timedelta(seconds=s)) for s in range(-5, 30)],
    ],
)
def test_next_release_name_is_always_newest_and_unique(existing: list[str]) -> None:
    name = next_release_name(NOW, existing)
    assert name not in existing
    moment = parse_release(name)
    assert moment is not None
    assert moment >= NOW
    for other in existing:
        other_time = parse_release(other)
        assert other_time is not None
        assert moment > other_time, (name, other)
    assert sort_releases([*existing, name])[-1] == name


def test_next_release_name_repeated_never_collides() -> None:
    existing: list[str] = []
    for _ in range(50):  # the same `now` fifty times: fifty different, increasing names
        existing.append(next_release_name(NOW, existing))
    assert len(set(existing)) == 50
    assert sort_releases(existing) == existing


# --------------------------------------------------------------------------- SitePaths

PATHS = SitePaths("/home/brokeforge", "shop.example.com")


def test_site_paths() -> None:
    assert PATHS.site_link == "/home/brokeforge/shop.example.com"
    assert PATHS.deployments == "/home/brokeforge/deployments/shop.example.com"
    assert PATHS.shared == "/home/brokeforge/deployments/shop.example.com/shared"
    assert PATHS.release("31072025-143022") == "/home/brokeforge/deployments/shop.example.com/31072025-143022"
    assert PATHS.log("31072025-143022") == f"/home/brokeforge/deployments/shop.example.com/31072025-143022/{LOG_NAME}"
    assert LOG_NAME == "deployment.log"
    assert PATHS.manifest("31072025-143022").endswith(f"/31072025-143022/{MANIFEST_NAME}")
    assert PATHS.link_target("31072025-143022") == "deployments/shop.example.com/31072025-143022"
    assert not PATHS.link_target("31072025-143022").startswith("/")  # relative target (SPEC §3)
    assert PATHS.lock.startswith(PATHS.deployments + "/")
    assert not is_release(PATHS.lock.rsplit("/", 1)[1])  # the lock is never mistaken for a release


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("deployments/shop.example.com/31072025-143022", "31072025-143022"),
        ("deployments/shop.example.com/31072025-143022/", "31072025-143022"),
        ("./deployments/shop.example.com/01082025-091245", "01082025-091245"),
        ("/home/brokeforge/deployments/shop.example.com/01082025-091245", "01082025-091245"),
        ("deployments/shop.example.com/31022025-101010", None),  # not a real date
        ("deployments/shop.example.com/shared", None),
        ("deployments/shop.example.com/", None),
        ("deployments/shop.example.com", None),
        ("deployments/shop.example.com/31072025-143022/public", None),
        ("deployments/other.example.com/31072025-143022", None),  # another site's release
        ("deployments/shop.example.com.evil/31072025-143022", None),
        ("deployments/shop.example.co/31072025-143022", None),
        ("/srv/other/deployments/shop.example.com/31072025-143022", None),  # another base path
        ("/elsewhere/31072025-143022", None),
        ("31072025-143022", None),
        ("deployments/shop.example.com/../other.example.com/31072025-143022", None),
        ("", None),
    ],
)
def test_release_from_target(target: str, expected: str | None) -> None:
    assert PATHS.release_from_target(target) == expected


@pytest.mark.parametrize("name", ["31072025-143022", "01082025-091245", "29022024-000000"])
def test_link_target_round_trip(name: str) -> None:
    assert PATHS.release_from_target(PATHS.link_target(name)) == name
    assert PATHS.release_from_target(PATHS.release(name)) == name


@pytest.mark.parametrize(
    ("entry", "target"),
    [
        ("storage", "../shared/storage"),
        (".env", "../shared/.env"),
        ("vendor", "../shared/vendor"),
        ("node_modules", "../shared/node_modules"),
        ("storage/app", "../../shared/storage/app"),
        ("storage/app/public", "../../../shared/storage/app/public"),
        ("public/uploads", "../../shared/public/uploads"),
    ],
)
def test_shared_link_target(entry: str, target: str, tmp_path: Path) -> None:
    assert shared_link_target(entry) == target
    # And it really resolves on a filesystem: release/<entry> -> deployments/<domain>/shared/<entry>.
    deployments = tmp_path / "deployments" / "shop.example.com"
    shared = deployments / "shared" / entry
    shared.mkdir(parents=True)
    link = deployments / "31072025-143022" / entry
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(shared_link_target(entry), link)
    assert link.resolve() == shared.resolve()


# --------------------------------------------------------------------------- quote

NASTY = [
    "plain",
    "",
    "a b",
    "/home/a b;touch pwned",
    "$(touch pwned)",
    "`touch pwned`",
    "; touch pwned",
    "&& touch pwned",
    "| touch pwned",
    "> pwned",
    "it's",
    "'; touch pwned; '",
    '"; touch pwned; "',
    "\\",
    "$HOME",
    "${HOME}",
    "*",
    "~",
    "-n",
    "--upload-pack=touch pwned",
    "line1\nline2",
    "tab\there",
    "ünïcødé ✓",
    "!",
    "#not a comment",
]


@pytest.mark.parametrize("value", NASTY)
def test_quote_round_trips_through_sh(value: str, tmp_path: Path) -> None:
    out = subprocess.run(
        ["/bin/sh", "-c", f"printf '%s' {quote(value)}"], cwd=tmp_path, capture_output=True, check=True
    ).stdout.decode()
    assert out == value
    assert list(tmp_path.iterdir()) == []  # nothing ran: no pwned file


@pytest.mark.parametrize("value", NASTY)
def test_quote_is_one_argument(value: str, tmp_path: Path) -> None:
    out = subprocess.run(
        ["/bin/sh", "-c", f'set -- {quote(value)}; printf "%s" "$#"'], cwd=tmp_path, capture_output=True, check=True
    ).stdout.decode()
    assert out == "1"
    assert list(tmp_path.iterdir()) == []
