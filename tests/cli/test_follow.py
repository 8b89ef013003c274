"""`logs` the long way (cli.follow): with no finished copy kept here, a deployment's log is read
from its server, after the state database was rebuilt, or followed with -f while the deployment
runs. Sites use `server = "local"`; the CLI runs in this process, or as real processes for -f."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from tests.support import make_app_repo, make_decl_repo, write_site
from tests.support.cli_world import DOMAIN, CliWorld, cli_process

FOLLOWED = "progress.example.com"


def test_logs_after_the_state_database_was_deleted_reads_the_server(world: CliWorld) -> None:
    (commit,) = world.deploy_n(1)
    shutil.rmtree(world.state)
    world.ok("reconcile")  # rebuilds the database from the server, deploys nothing
    assert len(world.releases()) == 1
    out = world.ok("logs", DOMAIN)
    assert f"built {commit}" in out.splitlines(), out


def test_logs_follow_streams_a_running_deployment(tmp_path: Path) -> None:
    app = make_app_repo(tmp_path / "app")
    decl = make_decl_repo(tmp_path / "decl")
    gate = tmp_path / "gate"
    write_site(decl, FOLLOWED, server="local", base_path=str(tmp_path / "srv"), repository=str(app),
               script=f"echo first-line\nwhile [ ! -e {gate} ]; do sleep 0.1; done\necho second-line\n")
    deploy = cli_process(tmp_path, "reconcile")
    log = next(iter((tmp_path / "srv" / "deployments" / FOLLOWED).glob("*/deployment.log")), None)
    deadline = time.monotonic() + 30
    while (log is None or "first-line" not in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
        log = next(iter((tmp_path / "srv" / "deployments" / FOLLOWED).glob("*/deployment.log")), None)
    follower = cli_process(tmp_path, "logs", FOLLOWED, "-f")
    assert follower.stdout is not None
    first = ""
    while "first-line" not in first and time.monotonic() < deadline:
        first += follower.stdout.readline()
    assert "first-line" in first, "the running deployment's output is shown before it ends"
    assert follower.poll() is None, "-f keeps following while the deployment runs"
    gate.write_text("")
    rest, _ = follower.communicate(timeout=30)
    assert "second-line" in rest
    assert follower.returncode == 0
    deploy.communicate(timeout=30)
    assert deploy.returncode == 0
