"""A build (engine/building.py) on one recording server (tests/support/engine_rig.py): the release
is claimed, cloned, its script run and its finish recorded, switched and reloaded in as few
commands as the steps allow; a failed step is the release's recorded failure with its log, a build
no longer desired is kept unswitched, and without `switch_to_it` the switch is left to the caller."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.core.layout import MANIFEST_NAME, release_name
from reconciler.core.status import DeployStatus, Sync
from reconciler.engine import building
from reconciler.engine.apply import Outcome, SiteContext
from tests.support import git
from tests.support.engine_rig import DOMAIN, Rig, engine_rig

RELEASE = release_name(datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC))


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with engine_rig(tmp_path) as made:
        yield made


def _deploy(rig: Rig, ctx: SiteContext, **more: object) -> Outcome:
    commit = git(rig.app, "rev-parse", "HEAD")
    return asyncio.run(building.deploy(ctx, RELEASE, commit, **more))  # type: ignore[arg-type]


def _manifest(rig: Rig) -> dict[str, object]:
    path = rig.on("web-1").root / "deployments" / DOMAIN / RELEASE / MANIFEST_NAME
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def test_a_build_without_a_script_goes_live_in_two_commands_and_records_its_success(rig: Rig) -> None:
    """The claim rides in the tied build command (clone), then one finish (record, switch, reload, log)."""
    ctx = rig.context(rig.site(reload="echo reloaded"))
    outcome = _deploy(rig, ctx)
    assert outcome.ok and outcome.warning == "", outcome
    assert rig.live("web-1") == RELEASE
    assert len(rig.on("web-1").sent) == 2, [s.command[:60] for s in rig.on("web-1").sent]
    assert _manifest(rig)["status"] == DeployStatus.SUCCESS
    (row,) = rig.store.deployments(DOMAIN)
    assert row["status"] == DeployStatus.SUCCESS and row["commit_subject"] == "v1", row
    assert "reloaded" in Path(row["local_log"]).read_text()
    site_row = rig.store.site(DOMAIN)
    assert site_row is not None and site_row["active_release"] == RELEASE


def test_the_deploy_script_travels_on_stdin_never_in_a_command_line(rig: Rig) -> None:
    """Not staged in the lock, the script goes with the claim on its stdin: one command more."""
    marker = "echo secret-token-in-script"
    ctx = rig.context(rig.site(script=f"{marker}\n"))
    outcome = _deploy(rig, ctx)
    assert outcome.ok, outcome
    sent = rig.on("web-1").sent
    assert len(sent) == 4, [s.command[:60] for s in sent]
    assert not any(marker in s.command for s in sent)
    assert any(marker in (s.stdin or "") for s in sent)
    (row,) = rig.store.deployments(DOMAIN)
    assert "secret-token-in-script" in Path(row["local_log"]).read_text()


def test_a_failing_script_names_the_line_it_stopped_at_and_never_goes_live(rig: Rig) -> None:
    ctx = rig.context(rig.site(script="echo one\nfalse\necho never\n"))
    outcome = _deploy(rig, ctx)
    assert not outcome.ok and outcome.message == "deploy script failed (exit 1) at: false", outcome
    assert rig.live("web-1") is None
    assert _manifest(rig)["status"] == DeployStatus.FAILED
    (row,) = rig.store.deployments(DOMAIN)
    assert (row["status"], row["exit_status"]) == (DeployStatus.FAILED, 1), row
    assert "==> failed: deploy script failed" in Path(row["local_log"]).read_text()


def test_a_failed_reload_after_the_switch_is_a_warning_not_a_failure(rig: Rig) -> None:
    ctx = rig.context(rig.site(reload="exit 7"))
    outcome = _deploy(rig, ctx)
    assert outcome.ok and outcome.warning == "reload command failed (exit 7)", outcome
    assert rig.live("web-1") == RELEASE


def test_a_build_no_longer_desired_is_recorded_a_success_and_left_unswitched(rig: Rig) -> None:
    ctx = rig.context(rig.site())
    ctx.still_desired = lambda: False
    outcome = _deploy(rig, ctx)
    assert outcome.ok and outcome.superseded and "newer declaration" in outcome.message, outcome
    assert rig.live("web-1") is None and rig.releases("web-1") == [RELEASE]
    assert _manifest(rig)["status"] == DeployStatus.SUCCESS


def test_without_switch_to_it_the_built_manifest_is_handed_back_unswitched(rig: Rig) -> None:
    ctx = rig.context(rig.site())
    outcome = _deploy(rig, ctx, switch_to_it=False, once="pending")
    assert outcome.ok and not outcome.superseded, outcome
    assert rig.live("web-1") is None
    handed = json.loads(outcome.manifest)
    assert handed["status"] == DeployStatus.SUCCESS and handed["once"] == "pending"
    assert _manifest(rig) == handed


def test_a_release_directory_that_is_not_ours_is_refused_and_left_alone(rig: Rig) -> None:
    taken = rig.on("web-1").root / "deployments" / DOMAIN / RELEASE
    taken.mkdir(parents=True)
    (taken / "precious").write_text("someone else's\n")
    ctx = rig.context(rig.site())
    outcome = _deploy(rig, ctx)
    assert not outcome.ok and outcome.message.startswith("cannot create release directory"), outcome
    assert (taken / "precious").read_text() == "someone else's\n"
    (row,) = rig.store.deployments(DOMAIN)
    assert row["deployment_path"] is None, "a directory we never claimed is not ours to record"


def test_a_deploy_marks_the_site_progressing_while_it_builds(rig: Rig) -> None:
    seen: list[str | None] = []
    ctx = rig.context(rig.site())
    ctx.progress = lambda step: seen.append((rig.store.site(DOMAIN) or {}).get("sync"))
    _deploy(rig, ctx)
    assert seen and set(seen) == {Sync.PROGRESSING}, seen


LIVE = release_name(datetime(2026, 12, 5, 12, 0, 0, tzinfo=UTC))


def test_copy_from_previous_rides_in_the_build_command_from_the_live_release(rig: Rig) -> None:
    """The live release's vendor/ is copied in the build command itself (no round trip more) and
    the script finds it; the live release keeps its own."""
    live = rig.on("web-1").root / "deployments" / DOMAIN / LIVE / "vendor"
    live.mkdir(parents=True)
    (live / "installed").write_text("from the live release\n")
    ctx = rig.context(rig.site(copy_from_previous=["vendor"]))
    outcome = _deploy(rig, ctx, previous=LIVE)
    assert outcome.ok, outcome
    assert len(rig.on("web-1").sent) == 2, [s.command[:60] for s in rig.on("web-1").sent]
    copied = rig.on("web-1").root / "deployments" / DOMAIN / RELEASE / "vendor"
    assert (copied / "installed").read_text() == "from the live release\n" and not copied.is_symlink()
    assert (copied / "installed").stat().st_ino != (live / "installed").stat().st_ino
    (row,) = rig.store.deployments(DOMAIN)
    assert "==> copy_from_previous: vendor copied from the live release" in Path(row["local_log"]).read_text()


def test_a_refused_copy_is_the_failed_step_and_nothing_goes_live(rig: Rig) -> None:
    """The app ships `app -> /tmp`: copying app/vendor would write outside the release."""
    (rig.app / "app").symlink_to("/tmp")
    git(rig.app, "add", "-A")
    git(rig.app, "commit", "-q", "-m", "a symlink")
    (rig.on("web-1").root / "deployments" / DOMAIN / LIVE / "app" / "vendor").mkdir(parents=True)
    ctx = rig.context(rig.site(copy_from_previous=["app/vendor"]))
    outcome = _deploy(rig, ctx, previous=LIVE)
    assert not outcome.ok and outcome.message.startswith("copy from previous release failed"), outcome
    assert "app/vendor" in outcome.message and rig.live("web-1") is None, outcome
    assert _manifest(rig)["status"] == DeployStatus.FAILED
