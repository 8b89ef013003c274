"""A site on one real sshd or on two, driven alike: the behaviour suite's world.

A single-server site (`server = ...`) and a many-server site (`servers = [...]`) must behave the
same; the behaviour suite (tests/behaviour/) runs each scenario with a `Fleet` of one and of two
servers. The servers are a `ServerPair` (tests/support/sshd.py): each sshd in its own mount namespace
with its own directory at the same base_path, so two servers really are two filesystems. The one-
server fleet uses the pair's first sshd alone, so both shapes see the same machinery.

The CLI runs in this process (`reconciler reconcile`, `retry`, ...), as an operator drives it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import write_config
from tests.support.disk import SiteOnDisk
from tests.support.repos import app_commit, git, make_app_repo, make_decl_repo, write_site
from tests.support.sshd import ServerPair, SshServer, mount_namespace_problem, start_sshd_pair
from tests.support.world import CliRun, cli_in_process

DOMAIN = "shop.example.com"
SHAPES = ("one", "two")  # a fleet of one server, of two servers


def shared_pair(tmp: Path) -> Iterator[ServerPair]:
    """Two sshds for many tests (a package- or module-scoped fixture's body): starting sshds per
    test would cost a second each. Skips, with the reason, where mount namespaces are unusable
    (a failure under RECONCILER_NO_SKIP, as in CI)."""
    problem = mount_namespace_problem()
    if problem is not None:
        pytest.skip(f"fleet: {problem}")
    pair = start_sshd_pair(tmp)
    try:
        yield pair
    finally:
        pair.stop()


def wipe(pair: ServerPair) -> None:
    """Empty every server's base_path: the next test's fleet starts from blank servers."""
    for server in pair.servers:
        for entry in pair.dir_of(server).iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


@dataclass
class Fleet:
    """One test's site on `servers` (one or two of the pair's sshds), its app and declarations
    repos, state and config."""

    shape: str
    pair: ServerPair
    tmp: Path
    servers: list[SshServer] = field(init=False)
    app: Path = field(init=False)
    decl: Path = field(init=False)
    config: Path = field(init=False)
    domain: str = DOMAIN

    def __post_init__(self) -> None:
        self.servers = list(self.pair.servers[:1] if self.shape == "one" else self.pair.servers[:2])
        self.app = make_app_repo(self.tmp / "app")
        self.decl = make_decl_repo(self.tmp / "decl")
        # Small timeouts: a hang is a failure within a minute, not a stuck CI job.
        self.config = write_config(self.tmp / "reconciler.toml", repo=self.decl, state=self.state,
                                   server=self.pair.servers[0], command_timeout=30, deploy_timeout=60)

    # -- the servers ----------------------------------------------------------------------------

    @property
    def state(self) -> Path:
        return self.tmp / "state"

    @property
    def first(self) -> SshServer:
        """The first listed server: `script_once` runs there."""
        return self.servers[0]

    @property
    def last(self) -> SshServer:
        """The last listed server (the first one too, in a fleet of one)."""
        return self.servers[-1]

    @property
    def base_path(self) -> str:
        """The base_path every server has (each its own directory there)."""
        return self.pair.base_path

    def path(self, name: str) -> str:
        """`name` under base_path, as a server's shell sees it (for flag files in scripts)."""
        return f"{self.base_path}/{name}"

    def disk(self, server: SshServer) -> Path:
        """Where `server`'s base_path really is, as this process sees it."""
        return self.pair.dir_of(server)

    def site(self, server: SshServer) -> SiteOnDisk:
        return self.pair.site(server, self.domain)

    def touch(self, name: str, on: SshServer | None = None) -> None:
        """Create flag file `name` under base_path on `on` (every server when None)."""
        for server in [on] if on is not None else self.servers:
            (self.disk(server) / name).touch()

    def remove(self, name: str, on: SshServer | None = None) -> None:
        for server in [on] if on is not None else self.servers:
            (self.disk(server) / name).unlink(missing_ok=True)

    def live(self) -> list[str | None]:
        """Each server's live release (None where there is none)."""
        return [self.site(server).active() for server in self.servers]

    def live_release(self) -> str:
        """The one release live on every server (fails unless they agree)."""
        live = self.live()
        assert live[0] is not None and len(set(live)) == 1, f"not one release live everywhere: {live}"
        return live[0]

    def two_releases(self) -> tuple[str, str]:
        """The site deployed, then a second commit deployed: (the first release, the live one)."""
        self.declare(script="echo built\n")
        assert self.reconcile().rc == 0
        first = self.live_release()
        self.commit("v2")
        assert self.reconcile().rc == 0
        return first, self.live_release()

    def live_commits(self) -> list[str | None]:
        return [self.pair.site(server, self.domain, tolerant=True).live_commit() for server in self.servers]

    def releases(self) -> list[list[str]]:
        """Each server's release directories, oldest first."""
        return [self.site(server).releases() for server in self.servers]

    def lines(self, name: str, on: SshServer | None = None) -> list[str]:
        """The lines of file `name` under base_path on `on` (the first server by default)."""
        file = self.disk(on or self.first) / name
        return file.read_text().splitlines() if file.exists() else []

    # -- the declarations and the app -----------------------------------------------------------

    @property
    def targets(self) -> list[str]:
        return [server.destination for server in self.servers]

    def declare(self, **fields: Any) -> None:
        """Write and commit the site's declaration: `server =` for one, `servers = [...]` for two."""
        where: dict[str, Any] = ({"server": self.targets[0]} if self.shape == "one"
                                 else {"servers": self.targets})
        write_site(self.decl, self.domain, base_path=self.base_path, repository=str(self.app), **where, **fields)

    def commit(self, message: str) -> str:
        """A new app commit (public/index.php says `message`); its sha."""
        return app_commit(self.app, message)

    def head(self) -> str:
        return git(self.app, "rev-parse", "HEAD")

    # -- the reconciler -------------------------------------------------------------------------

    def cli(self, *args: str) -> CliRun:
        """`reconciler ARGS` through the real entry point, in this process."""
        return cli_in_process(["--config", str(self.config), *args])

    def reconcile(self) -> CliRun:
        """One pass, as `reconciler reconcile` runs it."""
        return self.cli("reconcile")

    def status(self) -> dict[str, Any]:
        rc, out, err = self.cli("status", "--json")
        assert rc == 0, err
        views: list[dict[str, Any]] = json.loads(out)
        return next(view for view in views if view["domain"] == self.domain)

    def history(self) -> list[dict[str, Any]]:
        """`history D --json`, newest first."""
        rc, out, err = self.cli("history", self.domain, "--json")
        assert rc == 0, err
        rows: list[dict[str, Any]] = json.loads(out)
        return rows


def shapes(one: str | None = None, two: str | None = None) -> list[Any]:
    """Both shapes for `@pytest.mark.parametrize("fleet", shapes(...), indirect=True)`; a reason
    given for a shape marks that shape a known bug: strict xfail, so the day the
    bug is fixed the test fails until the marker goes."""
    reasons = {"one": one, "two": two}
    return [pytest.param(shape, id=shape, marks=[pytest.mark.xfail(strict=True, reason=f"known bug: {why}")])
            if (why := reasons[shape]) else pytest.param(shape, id=shape) for shape in SHAPES]
