"""Terminal rendering (cli.render): colour only on a terminal and never with NO_COLOR; tables
whose every cell is escaped (text from servers and repositories never drives the terminal) and
aligned; `status D`'s detail of one site; `history D`'s table with switches back to a release as
rows of their own, newest first. Pure functions on views as the engine makes them."""

from __future__ import annotations

import os
import pty
from typing import Any

import pytest

from reconciler.cli.render import history_table, paint, site_detail, table, use_color


def test_colour_only_on_a_terminal_and_never_with_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    main_fd, other_fd = pty.openpty()
    try:
        with os.fdopen(other_fd, "w", closefd=False) as terminal:
            monkeypatch.delenv("NO_COLOR", raising=False)
            assert use_color(terminal)
            monkeypatch.setenv("NO_COLOR", "1")
            assert not use_color(terminal)
    finally:
        os.close(main_fd)
        os.close(other_fd)
    assert "\033[" in table(["SYNC"], [["Failed"]], color=True)
    assert "\033[" not in table(["SYNC"], [["Failed"]], color=False)


def test_only_status_words_are_painted() -> None:
    assert paint("Failed", True) == "\033[31mFailed\033[0m"
    assert paint("Synced  ", True) == "\033[32mSynced  \033[0m", "padding stays inside the colour"
    assert paint("shop.example.com", True) == "shop.example.com"
    assert paint("Failed", False) == "Failed"


def test_a_table_aligns_its_columns_and_escapes_every_cell() -> None:
    out = table(["SITE", "MESSAGE"], [["a.example.com", "ok"], ["b", "lock held by \x1b]0;pwned\x07 host"]])
    header, first, second = out.splitlines()
    assert header.index("MESSAGE") == first.index("ok") == second.index("lock")
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b]0;pwned\\x07" in second
    assert not any(line.endswith(" ") for line in out.splitlines()), "no trailing blanks"


def _view(**fields: Any) -> dict[str, Any]:
    return {"domain": "shop.example.com", "server": "web-1", "sync": "Failed", "health": "Healthy",
            "active_release": "01012026-000000", "active_commit": "a" * 40, "desired_commit": "b" * 40,
            "pinned": None, "last_deployed_at": "2026-01-01T00:00:00Z", "message": "script exited 7", **fields}


def _deployment(id: int, release: str, started: str, **fields: Any) -> dict[str, Any]:
    return {"id": id, "release": release, "status": "success", "commit_sha": "c" * 40, "ref": "main",
            "commit_subject": "v1", "trigger": "commit", "requested_by": "", "started_at": started,
            "duration_ms": 1200, "is_active": False, "deployment_path": f"/srv/deployments/{release}",
            "message": "", **fields}


def test_site_detail_says_why_and_never_probed() -> None:
    out = site_detail(_view(), [])
    assert out.splitlines()[0] == "shop.example.com on web-1"
    assert "  active:    01012026-000000 (aaaaaaaaaaaa)" in out
    assert "  desired:   bbbbbbbbbbbb" in out
    assert "  why:       script exited 7" in out
    assert "  observed:  never (when its server was last probed)" in out
    assert "last deployments" not in out and "servers:" not in out and "shard:" not in out


def test_site_detail_on_many_servers_lists_each_and_a_skipped_shard() -> None:
    servers = [{"server": "web-1", "active_release": "r1", "message": ""},
               {"server": "web-2", "active_release": None, "message": "unreachable"}]
    out = site_detail(_view(servers=servers, skipped=True, shard="2/3"), [])
    assert "    web-1: r1" in out.splitlines()
    assert "    web-2: -  unreachable" in out.splitlines()
    assert "  shard:     2/3 (another instance's; this one leaves it alone)" in out


def test_site_detail_marks_the_active_and_the_pruned_deployments() -> None:
    deployments = [_deployment(2, "r2", "2026-01-02", is_active=True),
                   _deployment(1, "r1", "2026-01-01", deployment_path=None)]
    lines = site_detail(_view(), deployments).splitlines()
    rows = [line for line in lines if line.strip()[:1].isdigit()]
    assert rows[0].split()[:3] == ["2", "r2", "success"] and rows[0].endswith("active")
    assert rows[1].split()[:3] == ["1", "r1", "success"] and rows[1].endswith("pruned")


def test_history_puts_activations_among_deployments_newest_first() -> None:
    views = [_deployment(2, "r2", "2026-01-03T00:00:00Z", duration_ms=None),
             _deployment(1, "r1", "2026-01-01T00:00:00Z", is_active=True, activations=[
                 {"at": "2026-01-04T00:00:00Z", "previous": "r2", "trigger": "rollback",
                  "requested_by": "Ann Operator <ann@example.com>"}])]
    header, *rows = history_table(views).splitlines()
    assert header.split()[:3] == ["ID", "RELEASE", "STATUS"]
    assert [row.split()[:3] for row in rows] == [["-", "r1", "activated"], ["2", "r2", "success"],
                                                 ["1", "r1", "success"]]
    assert "from r2" in rows[0] and "rollback (Ann Operator)" in rows[0] and "ann@example.com" not in rows[0]
    assert rows[1].split()[-1] == "-", "no duration yet: a dash"
    assert "1200 ms" in rows[2]


def test_history_shows_a_failure_why_and_one_row_per_server() -> None:
    servers = [_deployment(7, "r3", "2026-01-05", server="web-1"),
               _deployment(8, "r3", "2026-01-05", server="web-2", status="failed", message="exit 7")]
    view = _deployment(7, "r3", "2026-01-05", status="failed", message="web-2: exit 7", servers=servers)
    release, first, second = history_table([view]).splitlines()[1:]
    assert release.split()[:3] == ["7", "r3", "failed"] and release.endswith("web-2: exit 7")
    assert first.split()[:3] == ["7", "web-1", "success"]
    assert second.split()[:3] == ["8", "web-2", "failed"] and second.endswith("exit 7")
