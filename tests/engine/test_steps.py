"""The steps of a rollout on a site's servers (engine/steps.py), each given a rollout made by hand:
each server's preparation (provision, clean, reload owed), the build on every server at once under
one name (one failure and no server switches; the run-once step owed by the first server only),
`script_once` on the first server (done, or the release failed and remembered), and pruning that
degrades but does not fail a rollout. Two recording servers (tests/support/engine_rig.py)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.core.layout import MANIFEST_NAME
from reconciler.core.plan import Clean, Provision, Prune, Reload
from reconciler.core.reasons import DeployReason
from reconciler.core.rollout import Build, Rollout, RunOnce
from reconciler.core.status import DeployStatus, Health, Sync
from reconciler.engine import building, steps
from reconciler.engine.apply import SiteContext
from reconciler.engine.outcome import RELOAD_RETRY
from reconciler.engine.site_run import SiteRun
from tests.support import git
from tests.support.engine_rig import DOMAIN, Rig, engine_rig

SERVERS = ("web-1", "web-2")
OLD, NEW = "06122026-110000", "06122026-120000"


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with engine_rig(tmp_path, SERVERS) as made:
        yield made


def _contexts(rig: Rig, run: SiteRun) -> dict[str, SiteContext]:
    return {server: rig.context(run.site, server) for server in SERVERS}


def _run(rig: Rig, **site: object) -> SiteRun:
    declared = rig.site(**site)
    return SiteRun(declared, None, facts={s: rig.facts(declared, s) for s in SERVERS})


def _rollout(**more: object) -> Rollout:
    return Rollout(Sync.OUT_OF_SYNC, Health.HEALTHY, servers=SERVERS, **more)  # type: ignore[arg-type]


def _manifest(rig: Rig, server: str, release: str) -> dict[str, object]:
    path = rig.on(server).root / "deployments" / DOMAIN / release / MANIFEST_NAME
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def _build(rig: Rig, run: SiteRun, release: str = NEW) -> dict[str, str]:
    build = Build(release, git(rig.app, "rev-parse", "HEAD"), DeployReason.DEPLOY, SERVERS)
    built = asyncio.run(steps.build(rig.bench, run, _rollout(build=build), _contexts(rig, run), fused=False))
    assert isinstance(built, dict), built
    return built


def test_each_servers_preparation_is_done_and_recorded(rig: Rig) -> None:
    commit = git(rig.app, "rev-parse", "HEAD")
    live = rig.context(rig.site(reload="exit 5"), "web-2")
    assert asyncio.run(building.deploy(live, OLD, commit)).ok
    half = rig.on("web-2").root / "deployments" / DOMAIN / NEW
    half.mkdir()
    rig.store.start_deployment(site=DOMAIN, server="web-2", release=NEW, status=DeployStatus.UPDATING,
                               deployment_path=str(half), started_at="2026-12-06T12:00:00Z")
    run = _run(rig, reload="exit 5")
    rollout = _rollout(prepare={"web-1": (Provision(),), "web-2": (Clean((NEW,)), Reload(OLD, "exit 5"))})
    warnings = asyncio.run(steps.prepare(rig.bench, run, rollout, _contexts(rig, run)))
    assert warnings == ["web-2: reload command failed (exit 5)"]
    assert (rig.on("web-1").root / "deployments" / DOMAIN).is_dir(), "provisioned"
    assert not half.exists()
    row = rig.store.by_release(DOMAIN, NEW, "web-2")
    assert row is not None and (row["status"], row["deployment_path"]) == (DeployStatus.FAILED, None)
    assert [type(a.action) for a in run.applied] == [Provision, Clean, Reload]


def test_a_build_is_made_everywhere_and_only_the_first_server_owes_the_run_once_step(rig: Rig) -> None:
    run = _run(rig, script_once="true\n")
    built = _build(rig, run)
    assert set(built) == set(SERVERS)
    assert [json.loads(built[s]).get("once", "") for s in SERVERS] == ["pending", ""]
    assert all(rig.live(s) is None and rig.releases(s) == [NEW] for s in SERVERS)


def test_a_build_failing_on_one_server_switches_none_and_says_where(rig: Rig) -> None:
    (rig.on("web-1").root / "mirror-up").touch()  # the release is base/deployments/<domain>/<release>
    run = _run(rig, script="test -e ../../../mirror-up || exit 3\n")
    build = Build(NEW, git(rig.app, "rev-parse", "HEAD"), DeployReason.DEPLOY, SERVERS)
    outcome = asyncio.run(steps.build(rig.bench, run, _rollout(build=build), _contexts(rig, run), fused=False))
    assert not isinstance(outcome, dict)
    assert outcome.sync == Sync.FAILED and outcome.message.startswith(f"build of {NEW} failed on web-2: ")
    assert outcome.message.endswith("; no server switched") and "web-1" not in outcome.message
    assert set(run.board) == {"web-2"} and [a.failed for a in run.applied] == [True]
    assert all(rig.live(s) is None for s in SERVERS)


def test_script_once_runs_on_the_first_server_and_is_recorded_done(rig: Rig) -> None:
    run = _run(rig, script_once="echo migrated >> ../../../migrations\n")
    built = _build(rig, run)
    rollout = _rollout(once=RunOnce(NEW, "web-1"))
    ctx = rig.context(run.site, "web-1")
    assert asyncio.run(steps.run_once(rig.bench, run, rollout, ctx, built["web-1"])) is None
    assert (rig.on("web-1").root / "migrations").read_text() == "migrated\n"
    assert not (rig.on("web-2").root / "migrations").exists()
    assert _manifest(rig, "web-1", NEW)["once"] == "done"
    row = rig.store.by_release(DOMAIN, NEW, "web-1")
    assert row is not None and row["once"] == "done"
    assert "==> script_once" in Path(row["local_log"]).read_text()


def test_a_failed_script_once_fails_the_release_and_switches_nothing(rig: Rig) -> None:
    run = _run(rig, script_once="echo boom; exit 6\n")
    built = _build(rig, run)
    ctx = rig.context(run.site, "web-1")
    outcome = asyncio.run(steps.run_once(rig.bench, run, _rollout(once=RunOnce(NEW, "web-1")), ctx, built["web-1"]))
    assert outcome is not None and outcome.sync == Sync.FAILED
    assert outcome.message == "script_once failed on web-1: exit 6; no server switched"
    assert _manifest(rig, "web-1", NEW)["status"] == DeployStatus.FAILED
    row = rig.store.by_release(DOMAIN, NEW, "web-1")
    assert row is not None and row["status"] == DeployStatus.FAILED and "boom" in Path(row["local_log"]).read_text()
    assert run.board["web-1"][1] == f"script_once of {NEW} failed: exit 6"


def test_a_release_that_is_no_longer_a_success_is_not_run_once(rig: Rig) -> None:
    run = _run(rig, script_once="echo ran >> ../../../migrations\n")
    _build(rig, run)
    path = rig.on("web-1").root / "deployments" / DOMAIN / NEW / MANIFEST_NAME
    path.write_text(json.dumps({**_manifest(rig, "web-1", NEW), "status": "failed"}))
    run = _run(rig, script_once="echo ran >> ../../../migrations\n")
    ctx = rig.context(run.site, "web-1")
    outcome = asyncio.run(steps.run_once(rig.bench, run, _rollout(once=RunOnce(NEW, "web-1")), ctx, None))
    assert outcome is not None and "is not a successful build there any more" in outcome.message
    assert not (rig.on("web-1").root / "migrations").exists()


def test_a_prune_that_fails_degrades_the_rollout_and_the_other_servers_go_on(
        rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stuck = tmp_path / "bin"
    stuck.mkdir()
    (stuck / "rm").write_text('#!/bin/sh\nfor a; do [ -e "$a/.stuck" ] && { echo "rm: $a: busy" >&2; exit 1; }; done\n'
                              'exec /bin/rm "$@"\n')
    (stuck / "rm").chmod(0o755)
    monkeypatch.setenv("PATH", f"{stuck}{os.pathsep}{os.environ['PATH']}")
    run = _run(rig)
    _build(rig, run, OLD)
    (rig.on("web-1").root / "deployments" / DOMAIN / OLD / ".stuck").touch()
    rig.store.owe_reload(DOMAIN, OLD, "exit 1")
    outcome = run.outcome(Sync.SYNCED, Health.HEALTHY)
    done = asyncio.run(steps.prune(rig.bench, run, _rollout(prune={s: (OLD,) for s in SERVERS}),
                                   _contexts(rig, run), outcome))
    assert done.sync == Sync.SYNCED and done.health == Health.DEGRADED
    assert done.message.startswith("web-1: ") and "busy" in done.message, done.message
    assert [(a.action, a.failed) for a in run.applied] == [(Prune((OLD,)), True), (Prune((OLD,)), False)]
    assert rig.releases("web-1") == [OLD] and rig.releases("web-2") == []
    assert (done.retry_after, done.backoff) == (RELOAD_RETRY, True), "an owed reload is retried with backoff"
