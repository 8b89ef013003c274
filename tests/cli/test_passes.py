"""A pass run from the command line (cli.passes): its report prints each site's verdict and
actions ("would ..." for a dry run), escaped, and exits 0 only when every site is Synced; a
sharded pass says what it left to other instances, and a site of another shard is exit 1; the
pass that answers retry/redeploy is skipped with --no-wait. Outcomes as the engine makes them."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from reconciler.cli.invocation import Invocation
from reconciler.cli.passes import PassResult, build_now, live_progress, one_pass, report, skipped
from reconciler.config import Settings
from reconciler.core.plan import Deploy
from reconciler.core.status import Health, Sync
from reconciler.engine.outcome import Applied, SiteOutcome
from tests.support import make_app_repo, make_decl_repo, write_config, write_site

SYNCED = SiteOutcome("a.example.com", "web-1", Sync.SYNCED, Health.HEALTHY)
DEPLOY = Deploy("01012026-000000", "f" * 40)


def _settings(tmp_path: Path, shard: str = "1/1") -> Settings:
    return Settings(repo=tmp_path / "decl", state_dir=tmp_path / "state", shard=shard)


def test_all_synced_is_exit_0_and_one_line_per_site(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deployed = SiteOutcome("b.example.com", "web-2", Sync.SYNCED, Health.HEALTHY, applied=[Applied(DEPLOY)])
    assert report(PassResult([SYNCED, deployed], "", {}), _settings(tmp_path), None, False) == 0
    assert capsys.readouterr().out.splitlines() == [
        "a.example.com: Synced/Healthy", "b.example.com: Synced/Healthy",
        f"  deploy {'f' * 12} as release 01012026-000000"]


def test_a_site_not_synced_is_exit_1_and_its_message_is_escaped(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    failed = SiteOutcome("b.example.com", "web-2", Sync.FAILED, Health.HEALTHY, "exit 7: \x1b[2Jcleared")
    assert report(PassResult([SYNCED, failed], "", {}), _settings(tmp_path), None, False) == 1
    out = capsys.readouterr().out
    assert "b.example.com: Failed/Healthy - exit 7: \\x1b[2Jcleared" in out.splitlines()
    assert "\x1b" not in out


def test_a_dry_run_says_would_and_a_notice_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    planned = SiteOutcome("a.example.com", "web-1", Sync.OUT_OF_SYNC, Health.HEALTHY, planned=[DEPLOY])
    assert report(PassResult([planned], "the tip is unsigned", {}), _settings(tmp_path), None, True) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "warning: the tip is unsigned"
    assert lines[2] == f"  would deploy {'f' * 12} as release 01012026-000000"


def test_an_undeclared_site_is_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report(PassResult([], "", {}), _settings(tmp_path), "nope.example.com", False) == 1
    assert "nope.example.com: no such site declared" in capsys.readouterr().err


def test_other_shards_sites_are_counted_and_one_named_is_exit_1(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    result = PassResult([SYNCED], "", {"b.example.com": "server web-2 is shard 2/2's", "c.example.com": "x"})
    settings = _settings(tmp_path, "1/2")
    assert skipped(result, settings, None) is None
    assert capsys.readouterr().out == "shard 1/2: 2 sites of other shards skipped\n"
    assert report(result, settings, "b.example.com", False) == 1
    assert "b.example.com: server web-2 is shard 2/2's" in capsys.readouterr().err


def test_no_wait_records_only_and_runs_no_pass(tmp_path: Path) -> None:
    invocation = Invocation(None, {"repo": str(tmp_path / "no-such-repo"), "state_dir": str(tmp_path / "state")})
    assert build_now(invocation, argparse.Namespace(no_wait=True, domain="a.example.com")) == 0
    assert not (tmp_path / "state").exists()


def test_a_dry_run_pass_creates_no_state_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app, decl = make_app_repo(tmp_path / "app"), make_decl_repo(tmp_path / "decl")
    write_site(decl, "a.example.com", server="local", base_path=str(tmp_path / "srv"), repository=str(app))
    config = write_config(tmp_path / "reconciler.toml", repo=decl, state=tmp_path / "state", interval=None)
    (outcome,) = one_pass(Invocation(str(config), {}), None, True).outcomes
    assert outcome.sync == Sync.OUT_OF_SYNC and any(a.startswith("deploy ") for a in outcome.actions), outcome
    assert not (tmp_path / "state").exists() and not (tmp_path / "srv").exists()


def test_progress_is_live_only_on_a_terminal() -> None:
    assert live_progress().live is False  # pytest captures stderr: not a terminal
