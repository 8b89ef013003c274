"""The world of the command line tests (tests/cli): sites on "local" under a temporary base path,
the CLI run in this process with --repo/--state-dir and a config file that only opts in to local
sites (the cwd is neutral), as an operator's shell would; plus what those tests look at on disk.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.config import write_config
from tests.support.process import reconciler_process
from tests.support.repos import app_commit, git
from tests.support.world import CliRun, World, cli_in_process

DOMAIN = "shop.example.com"
OTHER = "blog.example.com"
# The script prints the commit it built: each deployment's log is recognisable.
MARK_SCRIPT = 'echo "built $(git rev-parse HEAD)"\n'


@dataclass
class CliWorld(World):
    """Sites on "local"; the CLI runs in this process with --repo/--state-dir and a config file
    that only opts in to local sites (the cwd is neutral), as an operator's shell would."""

    def flags(self, repo: Path | None = None) -> list[str]:
        opt_in = self.tmp / "allow-local.toml"
        if not opt_in.is_file():
            write_config(opt_in, interval=None)  # allow_local = true, nothing else
        return ["--repo", str(repo or self.decl), "--state-dir", str(self.state), "--config", str(opt_in)]

    def committed(self, domain: str = DOMAIN, repo: Path | None = None) -> str:
        return git(repo or self.decl, "show", f"main:sites.d/{domain}.toml")

    # -- the CLI --------------------------------------------------------------------------------

    def run(self, *argv: str) -> CliRun:
        """The CLI with exactly these arguments."""
        return cli_in_process(list(argv))

    def cli(self, *args: str, repo: Path | None = None) -> CliRun:
        """The CLI on this world's declarations repository and state dir."""
        return self.run_cli(*args, repo=repo)

    def ok(self, *args: str, repo: Path | None = None) -> str:
        rc, out, err = self.cli(*args, repo=repo)
        assert rc == 0, (args, out, err)
        return out

    def history(self, domain: str = DOMAIN) -> list[dict[str, Any]]:
        views = json.loads(self.ok("history", domain, "--json"))
        assert isinstance(views, list)
        return views

    def status(self) -> dict[str, dict[str, Any]]:
        views = json.loads(self.ok("status", "--json"))
        assert isinstance(views, list)
        return {v["domain"]: v for v in views}

    def deploy_n(self, n: int, domain: str = DOMAIN, **fields: Any) -> list[str]:
        """Declare the site and deploy `n` app commits; returns the commits, oldest first."""
        self.declare(domain, script=MARK_SCRIPT, **fields)
        commits = []
        for i in range(n):
            if i:
                app_commit(self.app, f"{domain} v{i + 1}")
            commits.append(git(self.app, "rev-parse", "HEAD"))
            self.ok("reconcile")
        assert len(self.releases(domain)) >= min(n, fields.get("keep", 14))
        return commits


def tree(root: Path) -> list[str]:
    """Every path under `root`, relative and sorted ([] when it does not exist)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def deployment_rows(state: Path) -> int:
    """How many deployments the state database under `state` records (0 without one)."""
    db = state / "reconciler.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")}
        if "deployments" not in tables:
            return 0
        return int(conn.execute("select count(*) from deployments").fetchone()[0])


def cli_process(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    """`reconciler ARGS` as a process of its own on tmp_path's decl/ and state/, sites on "local"
    (a config that opts in is written once): for output that only a real process shows (a
    redrawn line on a terminal, a follower that keeps reading)."""
    opt_in = tmp_path / "reconciler.toml"
    if not opt_in.is_file():
        write_config(opt_in, interval=None)  # allow_local = true: the sites are "local"
    flags = ["--repo", str(tmp_path / "decl"), "--state-dir", str(tmp_path / "state"), "--config", str(opt_in)]
    return reconciler_process(*flags, *args, cwd=tmp_path)
