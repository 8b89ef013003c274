"""What `history` and `status` make of the state database's rows (engine/views.py):
a site on many servers has a deployment row per server of each release, and its history shows one
entry per release with each server's result nested (`servers`), its status from all of them, who
or what triggered it, one activation per switch of all its servers, and Rollback only where every
server could switch to it. Its `status` says when its servers were observed, when the live release
went live and which commit it wants (its own row keeps none of these). A site on one server shows
what it always did, plus a one-element `servers`.

Real SQLite state databases (engine.store.Store), rows as the reconciler writes them, read by the
plain-sqlite3 reader the CLI uses (engine.state_reader) and by Store (the HTTP API), which must
agree. On today's main each server's row is its own entry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.reasons import SwitchReason
from reconciler.engine.state_reader import StateReader
from reconciler.engine.store import Store
from reconciler.engine.views import declared_views, history_views

DOMAIN = "shop.example.com"
R1, R2, R3 = "06122026-120000", "06122026-120100", "06122026-120200"
A, B, C = "a" * 40, "b" * 40, "c" * 40


class Rows:
    """A state database written as the reconciler writes it, read back by both readers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.store = Store(path)

    def build(self, server: str, release: str, status: str, commit: str = A, *, trigger: str = "deploy",
              by: str = "", at: str = "2026-12-06T12:00:00Z", done: str | None = "2026-12-06T12:00:30Z",
              ms: int | None = 1000, message: str = "", exit_status: int | None = None, on_disk: bool = True,
              ref: str = "main") -> int:
        path = f"/home/brokeforge/deployments/{DOMAIN}/{release}"
        return self.store.start_deployment(
            site=DOMAIN, server=server, release=release, status=status, commit_sha=commit, branch=ref,
            deployment_path=path if on_disk else None, log_file_path=f"{path}/deployment.log", started_at=at,
            completed_at=done, duration_ms=ms, message=message, exit_status=exit_status, trigger=trigger,
            requested_by=by)

    def site(self, servers: list[str], live: dict[str, str | None], said: dict[str, str] | None = None,
             **values: Any) -> None:
        """The site's row (its live release and deployment: the first server's) and each server's
        (with what `said` says of it, as a pass of the site on many servers writes them)."""
        first = live[servers[0]]
        row = self.store.by_release(DOMAIN, first, servers[0]) if first else None
        self.store.update_site(DOMAIN, server=", ".join(servers), active_release=first,
                               active_commit=row["commit_sha"] if row else None,
                               active_deployment_id=row["id"] if row else None, **values)
        if len(servers) > 1:
            self.store.set_site_servers(DOMAIN, {server: (live[server], (said or {}).get(server, ""))
                                                 for server in servers})

    def history(self) -> list[dict[str, Any]]:
        reader = StateReader(self.path)
        try:
            shown = history_views(reader, DOMAIN)
        finally:
            reader.close()
        assert shown == history_views(self.store, DOMAIN), "the CLI's reader and the API's Store disagree"
        return shown

    def status(self) -> dict[str, Any]:
        reader = StateReader(self.path)
        try:
            (view,) = declared_views(reader, None)
        finally:
            reader.close()
        return view


@pytest.fixture(name="rows")
def rows_fixture(tmp_path: Path) -> Iterator[Rows]:
    rows = Rows(tmp_path / "reconciler.db")
    yield rows
    rows.store.close()


def test_a_release_on_two_servers_is_one_entry_with_each_servers_result(rows: Rows) -> None:
    first = rows.build("web-1", R1, "success", ms=900)
    rows.build("web-2", R1, "success", ms=1100)
    one = rows.build("web-1", R2, "success", B, at="2026-12-06T12:01:00Z", ms=800)
    two = rows.build("web-2", R2, "failed", B, at="2026-12-06T12:01:00Z", ms=700,
                     message="deploy script failed (exit 3) at: composer install", exit_status=3)
    rows.site(["web-1", "web-2"], {"web-1": R1, "web-2": R1})
    newest, older = rows.history()
    assert (newest["release"], newest["id"], newest["status"], newest["commit_sha"]) == (R2, one, "failed", B)
    assert newest["message"] == "web-2: deploy script failed (exit 3) at: composer install"
    assert (newest["exit_status"], newest["duration_ms"], newest["can_rollback"]) == (3, 800, False)
    assert [(s["server"], s["id"], s["status"], s["duration_ms"], s["message"]) for s in newest["servers"]] == [
        ("web-1", one, "success", 800, ""),
        ("web-2", two, "failed", 700, "deploy script failed (exit 3) at: composer install")]
    assert newest["trigger"] == "app commit", "the generic many-server cause is named as the planner names it"
    assert (older["release"], older["id"], older["status"], older["is_active"]) == (R1, first, "success", True)
    assert older["can_rollback"] is False and older["duration_ms"] == 1100
    assert [s["is_active"] for s in older["servers"]] == [True, True]
    assert older["trigger"] == "first deploy" and older["server"] == "web-1, web-2"


def test_a_release_is_success_only_on_every_server_and_otherwise_where_it_is(rows: Rows) -> None:
    rows.build("web-1", R1, "success")
    rows.build("web-2", R1, "success")
    rows.build("web-1", R2, "success", B, done=None)
    rows.build("web-2", R2, "updating", B, done=None, ms=None)
    rows.build("web-1", R3, "pending", C, done=None, ms=None)
    rows.build("web-2", R3, "success", C)
    rows.site(["web-1", "web-2"], {"web-1": R1, "web-2": R1})
    assert [(e["release"], e["status"], e["completed_at"]) for e in rows.history()] == [
        (R3, "pending", None), (R2, "updating", None), (R1, "success", "2026-12-06T12:00:30Z")]


def test_rollback_is_offered_only_where_every_server_has_the_release(rows: Rows) -> None:
    rows.build("web-1", R1, "success")
    rows.build("web-2", R1, "success", on_disk=False)  # pruned (or removed) on web-2 only
    rows.build("web-1", R2, "success", B)
    rows.build("web-2", R2, "success", B)
    rows.build("web-1", R3, "success", C)
    rows.build("web-2", R3, "success", C)
    rows.site(["web-1", "web-2"], {"web-1": R3, "web-2": R3})
    assert [(e["release"], e["can_rollback"], e["is_active"]) for e in rows.history()] == [
        (R3, False, True), (R2, True, False), (R1, False, False)]
    # A server joining later has none of the releases built before it: no rollback to them.
    rows.site(["web-1", "web-2", "web-3"], {"web-1": R3, "web-2": R3, "web-3": R3})
    assert [e["can_rollback"] for e in rows.history()] == [False, False, False]


@pytest.mark.parametrize("servers", [["web-1"], ["web-1", "web-2"]], ids=["one", "two"])
def test_no_rollback_to_a_release_whose_script_once_never_succeeded(rows: Rows, servers: list[str]) -> None:
    """The store records the run-once state as the first server's manifest does (deployments.once):
    a release still `pending` (the step failed or the reconciler died in it) is never offered."""
    for release, commit in ((R1, A), (R2, B), (R3, C)):
        for server in servers:
            ids = rows.build(server, release, "success", commit)
            if server == servers[0]:
                rows.store.update_deployment(ids, once="pending" if release == R2 else "done")
    rows.site(servers, {server: R3 for server in servers})
    assert [(e["release"], e["can_rollback"]) for e in rows.history()] == [(R3, False), (R2, False), (R1, True)]


def test_a_generic_deploy_trigger_is_named_and_an_operators_stays(rows: Rows) -> None:
    for n, (release, commit, trigger) in enumerate([(R1, A, "deploy"), (R2, B, "deploy"), (R3, B, "deploy")]):
        for server in ("web-1", "web-2"):
            rows.build(server, release, "success", commit, trigger=trigger, at=f"2026-12-06T12:0{n}:00Z")
    rows.build("web-1", "06122026-120300", "success", B, trigger="redeploy", by="ana", at="2026-12-06T12:03:00Z")
    rows.site(["web-1", "web-2"], {"web-1": R3, "web-2": R3})
    shown = rows.history()
    assert [(e["trigger"], e["requested_by"]) for e in shown] == [
        ("redeploy", "ana"), ("declaration", ""), ("app commit", ""), ("first deploy", "")]
    assert {s["trigger"] for e in shown[1:] for s in e["servers"]} == {"declaration", "app commit", "first deploy"}


def test_a_tag_site_says_tag_moved_when_its_tag_names_another_commit(rows: Rows) -> None:
    for n, (release, commit, ref) in enumerate([(R1, A, "tag v1"), (R2, B, "tag v1"), (R3, C, "tag v2")]):
        for server in ("web-1", "web-2"):
            rows.build(server, release, "success", commit, ref=ref, at=f"2026-12-06T12:0{n}:00Z")
    rows.site(["web-1", "web-2"], {"web-1": R3, "web-2": R3})
    assert [e["trigger"] for e in rows.history()] == ["declaration", "tag moved", "first deploy"]


def test_one_switch_of_every_server_is_one_activation(rows: Rows) -> None:
    for release, commit in ((R1, A), (R2, B)):
        for server in ("web-1", "web-2"):
            rows.build(server, release, "success" if release == R1 else "failed", commit)
    rows.site(["web-1", "web-2"], {"web-1": R1, "web-2": R1})
    # An automatic rollback switches each server back, recorded once per server, moments apart.
    rows.store.record_activation(DOMAIN, R1, R2, "2026-12-06T12:02:00Z", SwitchReason.AUTO_ROLLBACK, "")
    rows.store.record_activation(DOMAIN, R1, R2, "2026-12-06T12:02:01Z", SwitchReason.AUTO_ROLLBACK, "")
    # ... and a second one, an hour later, is a second event.
    rows.store.record_activation(DOMAIN, R1, R2, "2026-12-06T13:02:00Z", SwitchReason.AUTO_ROLLBACK, "")
    entry = next(e for e in rows.history() if e["release"] == R1)
    assert [a["at"] for a in entry["activations"]] == ["2026-12-06T13:02:00Z", "2026-12-06T12:02:01Z"]


def test_a_site_on_one_server_shows_what_it_always_did_with_its_one_server(rows: Rows) -> None:
    first = rows.build("web-1", R1, "success", trigger="first deploy")
    failed = rows.build("web-1", R2, "failed", B, trigger="app commit", message="deploy script failed (exit 3)",
                        exit_status=3, at="2026-12-06T12:01:00Z")
    rows.site(["web-1"], {"web-1": R1}, sync="Synced")
    # Its status is its own row, as its pass wrote it (nothing derived: here, nothing written).
    view = rows.status()
    assert (view["desired_commit"], view["last_deployed_at"], view["observed_at"]) == (None, None, None), view
    # Two identical switches on one server are two events (never merged).
    rows.store.record_activation(DOMAIN, R1, R2, "2026-12-06T12:02:00Z", SwitchReason.DRIFT, "")
    rows.store.record_activation(DOMAIN, R1, R2, "2026-12-06T12:02:01Z", SwitchReason.DRIFT, "")
    newest, older = rows.history()
    assert (newest["id"], newest["status"], newest["message"], newest["server"]) == (
        failed, "failed", "deploy script failed (exit 3)", "web-1")
    assert (older["id"], older["is_active"], older["can_rollback"], len(older["activations"])) == (
        first, True, False, 2)
    assert [(s["server"], s["id"], s["status"]) for e in (newest, older) for s in e["servers"]] == [
        ("web-1", failed, "failed"), ("web-1", first, "success")]


def test_status_of_a_site_on_many_servers_says_when_observed_deployed_and_what_it_wants(rows: Rows) -> None:
    rows.build("web-1", R1, "success", done="2026-12-06T12:00:30Z")
    rows.build("web-2", R1, "success", done="2026-12-06T12:00:40Z")
    # A pass found web-2 unreachable: web-1 is observed, web-2 never was, so the site's facts are
    # of no known age.
    rows.site(["web-1", "web-2"], {"web-1": R1, "web-2": R1}, {"web-2": "unreachable: connection refused"},
              sync="Unknown", health="Unknown")
    assert set(rows.store.observations()) == {"web-1"}
    view = rows.status()
    assert (view["last_deployed_at"], view["desired_commit"], view["observed_at"]) == (
        "2026-12-06T12:00:40Z", A, None)
    rows.site(["web-1", "web-2"], {"web-1": R1, "web-2": R1}, sync="Synced", health="Healthy")
    assert set(rows.store.observations()) == {"web-1", "web-2"}
    rows.store.db.execute("update servers set observed_at = case name when 'web-1' then '2026-12-06T12:05:00Z' "
                          "else '2026-12-06T12:04:00Z' end")
    view = rows.status()
    assert (view["observed_at"], view["desired_commit"]) == ("2026-12-06T12:04:00Z", A), "its older probe"
    # A new commit fails to build on web-2: the site wants it, R1 stays live.
    rows.build("web-1", R2, "success", B, at="2026-12-06T12:06:00Z", done="2026-12-06T12:06:30Z")
    rows.build("web-2", R2, "failed", B, at="2026-12-06T12:06:00Z", done="2026-12-06T12:06:30Z")
    rows.site(["web-1", "web-2"], {"web-1": R1, "web-2": R1}, sync="Failed")
    view = rows.status()
    assert (view["active_commit"], view["desired_commit"], view["last_deployed_at"]) == (
        A, B, "2026-12-06T12:00:40Z")
    # Pinned to R1 again later: the pin's commit is wanted, and the switch is the latest deploy.
    rows.store.record_activation(DOMAIN, R1, R2, "2026-12-06T12:09:00Z", SwitchReason.ROLLBACK, "ana")
    rows.site(["web-1", "web-2"], {"web-1": R1, "web-2": R1}, sync="OutOfSync", pinned=R1)
    view = rows.status()
    assert (view["desired_commit"], view["last_deployed_at"]) == (A, "2026-12-06T12:09:00Z")


def test_servers_are_shown_in_their_declared_order_whatever_order_a_pass_wrote_them(rows: Rows) -> None:
    two = rows.build("web-2", R1, "failed", message="deploy script failed (exit 3)")  # web-2's row first
    one = rows.build("web-1", R1, "success")
    rows.store.update_site(DOMAIN, server="web-1, web-2", sync="Failed")
    rows.store.set_site_servers(DOMAIN, {"web-2": (None, "build of R1 failed"), "web-1": (None, "")})
    (entry,) = rows.history()
    assert [(s["server"], s["id"]) for s in entry["servers"]] == [("web-1", one), ("web-2", two)]
    assert entry["id"] == one, "the entry stands for its first declared server's build"
    assert [s["server"] for s in rows.status()["servers"]] == ["web-1", "web-2"]
