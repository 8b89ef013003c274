"""The commands a rollout sends to one server (engine/apply.py), one function each, over a
recording server (tests/support/engine_rig.py): the site link is only ever replaced by a symlink
switch (a directory in its place is refused), a failed reload is a warning, pruning forgets the
removed releases' paths, a run-once step or a failure is written to the manifest and the store,
and deploy output is kept owner-only on this host."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.core.layout import MANIFEST_NAME
from reconciler.core.manifest import ONCE_DONE
from reconciler.core.status import DeployStatus, Step
from reconciler.engine import apply, building
from reconciler.errors import LayoutConflict, StepFailed
from reconciler.remote.protocol import site_steps
from tests.support import git
from tests.support.engine_rig import DOMAIN, Rig, engine_rig

FIRST, SECOND = "06122026-120000", "06122026-130000"


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with engine_rig(tmp_path) as made:
        yield made


def _built(rig: Rig, ctx: apply.SiteContext, *releases: str) -> None:
    commit = git(rig.app, "rev-parse", "HEAD")
    for release in releases:
        assert asyncio.run(building.deploy(ctx, release, commit, switch_to_it=False)).ok


def _manifest(rig: Rig, release: str) -> dict[str, object]:
    path = rig.on("web-1").root / "deployments" / DOMAIN / release / MANIFEST_NAME
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def test_switch_points_the_site_link_at_the_release(rig: Rig) -> None:
    ctx = rig.context(rig.site())
    _built(rig, ctx, FIRST, SECOND)
    asyncio.run(apply.switch(ctx, FIRST))
    assert rig.live("web-1") == FIRST
    asyncio.run(apply.switch(ctx, SECOND))
    assert rig.live("web-1") == SECOND


def test_switch_refuses_to_replace_a_site_path_that_is_not_a_symlink(rig: Rig) -> None:
    ctx = rig.context(rig.site())
    _built(rig, ctx, FIRST)
    real = rig.on("web-1").root / DOMAIN
    real.mkdir()
    (real / "index.php").write_text("hand-made\n")
    with pytest.raises(LayoutConflict, match="is not a symlink"):
        asyncio.run(apply.switch(ctx, FIRST))
    assert (real / "index.php").read_text() == "hand-made\n"


def test_reload_without_a_command_sends_nothing_and_a_failed_one_is_a_warning(rig: Rig) -> None:
    quiet = rig.context(rig.site())
    assert asyncio.run(apply.reload(quiet, FIRST)) == ""
    assert rig.on("web-1").sent == []
    ctx = rig.context(rig.site(reload="exit 5"))
    _built(rig, ctx, FIRST)
    assert asyncio.run(apply.reload(ctx, FIRST)) == "reload command failed (exit 5)"


def test_prune_removes_the_releases_and_forgets_their_paths(rig: Rig) -> None:
    ctx = rig.context(rig.site())
    _built(rig, ctx, FIRST, SECOND)
    asyncio.run(apply.prune(ctx, (FIRST,)))
    assert rig.releases("web-1") == [SECOND]
    paths = {r["release"]: r["deployment_path"] for r in rig.store.deployments(DOMAIN)}
    assert paths[FIRST] is None and paths[SECOND] is not None, paths
    rig.clear()
    asyncio.run(apply.prune(ctx, ()))
    assert rig.on("web-1").sent == [], "nothing to prune sends nothing"


def test_record_once_done_and_mark_failed_write_the_manifest_and_the_row(rig: Rig) -> None:
    ctx = rig.context(rig.site())
    _built(rig, ctx, FIRST, SECOND)
    done = {**_manifest(rig, FIRST), "once": ONCE_DONE}
    asyncio.run(apply.record_once_done(ctx, FIRST, json.dumps(done)))
    failed = {**_manifest(rig, SECOND), "status": DeployStatus.FAILED}
    asyncio.run(apply.mark_failed(ctx, SECOND, json.dumps(failed), "script_once failed: exit 2"))
    assert _manifest(rig, FIRST)["once"] == ONCE_DONE
    assert _manifest(rig, SECOND)["status"] == DeployStatus.FAILED
    rows = {r["release"]: r for r in rig.store.deployments(DOMAIN)}
    assert rows[FIRST]["once"] == ONCE_DONE
    assert (rows[SECOND]["status"], rows[SECOND]["message"]) == (DeployStatus.FAILED, "script_once failed: exit 2")
    log = (rig.on("web-1").root / "deployments" / DOMAIN / SECOND / "deployment.log").read_text()
    assert "==> script_once failed: exit 2" in log


def test_keep_log_copies_the_grown_server_log_for_history(rig: Rig) -> None:
    ctx = rig.context(rig.site())
    _built(rig, ctx, FIRST)
    server_log = rig.on("web-1").root / "deployments" / DOMAIN / FIRST / "deployment.log"
    server_log.write_text(server_log.read_text() + "later output\n")
    asyncio.run(apply.keep_log(ctx, FIRST))
    (row,) = rig.store.deployments(DOMAIN)
    assert Path(row["local_log"]).read_text().endswith("later output\n")


def test_run_reports_a_failing_command_as_that_steps_failure(rig: Rig) -> None:
    ctx = rig.context(rig.site())
    _built(rig, ctx, FIRST)
    asyncio.run(apply.run_step(ctx, site_steps.run_once(ctx.paths, FIRST, "echo fine\n"), 10))
    with pytest.raises(StepFailed) as raised:
        asyncio.run(apply.run_step(ctx, site_steps.run_once(ctx.paths, FIRST, "echo broken; exit 9\n"), 10))
    assert (raised.value.step, raised.value.exit_status) == (Step.SCRIPT, 9)


def test_a_local_log_is_owner_only_at_every_level(rig: Rig) -> None:
    ctx = rig.context(rig.site())
    path = apply.save_local_log(ctx, 42, "secret output\n")
    assert path.read_text() == "secret output\n" and path.name == "42.log"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(ctx.log_dir.stat().st_mode) == 0o700


def test_progress_words_a_deploy_step_with_its_short_label(rig: Rig) -> None:
    seen: list[str] = []
    ctx = rig.context(rig.site())
    ctx.progress = seen.append
    ctx.step(Step.SHARED)
    ctx.step(Step.CLONE)
    ctx.step("rollback to 06122026-120000")
    assert seen == ["link shared", str(Step.CLONE), "rollback to 06122026-120000"]
    assert ctx.server == "web-1"
