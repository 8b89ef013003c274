"""One test's world: an app repo, a declarations repo, a base path on the "server", a state dir
and a config file, with the ways a test drives the reconciler: the CLI in this process
(`run_cli`), the CLI as a real process (`run_cli_process`) and the daemon (`start_daemon`).

The suite's world classes (test_cli, test_daemon, test_watch, test_web, test_ssh_acceptance,
test_lock, faults/support, hostile/test_corpus) extend this one and add only what their tests
need.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Self, TypeVar

import pytest

from reconciler.cli.main import main as cli_main
from reconciler.config import Settings
from reconciler.engine.converge import SiteOutcome
from tests.support.config import reconcile, settings_for, write_config
from tests.support.disk import SiteOnDisk
from tests.support.process import DaemonProcess, Daemons, Launcher, run_reconciler
from tests.support.repos import git, make_app_repo, make_decl_repo, write_site
from tests.support.sshd import SshServer
from tests.support.wait import wait_until

DOMAIN = "shop.example.com"


W = TypeVar("W", bound="World")


class CliRun(NamedTuple):
    """What one in-process CLI command did: `rc, out, err = world.run_cli(...)`."""

    rc: int
    out: str
    err: str


def cli_in_process(argv: list[str]) -> CliRun:
    """`reconciler ARGV` through the real entry point, in this process, its output captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli_main(argv)
    return CliRun(rc, out.getvalue(), err.getvalue())


@dataclass
class World:
    tmp: Path
    server: SshServer | None  # the sshd the sites are declared on by default; None: "local"
    app: Path
    decl: Path
    base: Path
    state: Path
    config: Path
    domain: str = DOMAIN  # the site `declare()` and friends mean by default
    daemons: Daemons | None = field(default=None, kw_only=True)  # the `daemons` fixture, to start daemons
    _launcher: Launcher | None = field(default=None, init=False, repr=False)

    @classmethod
    def create(cls, tmp: Path, server: SshServer | None = None, *, domain: str = DOMAIN, app: Path | None = None,
               base: Path | None = None, daemons: Daemons | None = None, **config: Any) -> Self:
        """A fresh world under `tmp`: an app repo (unless given), a declarations repo, a base path
        (unless given), a state dir and reconciler.toml with `config` in it."""
        if app is None:
            app = make_app_repo(tmp / "app")
        if base is None:
            base = tmp / "srv"
            base.mkdir()
        decl = make_decl_repo(tmp / "decl")
        state = tmp / "state"
        self = cls(tmp, server, app, decl, base, state, tmp / "reconciler.toml", domain, daemons=daemons)
        self.write_config(**config)
        return self

    # -- declarations ---------------------------------------------------------------------------

    @property
    def server_name(self) -> str:
        """What `server =` says for this world's server: the sshd's destination, or "local"."""
        return self.server.destination if self.server is not None else "local"

    def declare(self, domain: str | None = None, *, server: str | None = None, base: Path | None = None,
                repository: Path | str | None = None, commit: bool = True, **fields: Any) -> Path:
        """Write (and commit) sites.d/<domain>.toml on this world's server, base path and app."""
        values: dict[str, Any] = {"server": server or self.server_name, "base_path": str(base or self.base),
                                  "repository": str(repository or self.app), **fields}
        return write_site(self.decl, domain or self.domain, commit=commit, **values)

    def tip(self, repo: Path | None = None) -> str:
        """The declarations branch's commit."""
        return git(repo or self.decl, "rev-parse", "refs/heads/main")

    def head(self) -> str:
        """The app repository's HEAD commit."""
        return git(self.app, "rev-parse", "HEAD")

    def write_config(self, **values: Any) -> Path:
        """(Re)write this world's reconciler.toml: repo, state dir, the sshd's keys and `values`
        (which may override any of them)."""
        return write_config(self.config, **{"repo": self.decl, "state": self.state, "server": self.server, **values})

    def settings(self, **extra: Any) -> Settings:
        keys: dict[str, Any] = {}
        if self.server is not None:
            keys = {"identity_file": self.server.identity_file, "known_hosts": self.server.known_hosts}
        return settings_for(self.decl, self.state, **{**keys, **extra})

    def reconcile_in_process(self, site: str | None = None, **settings: Any) -> dict[str, SiteOutcome]:
        """One real pass in this process (no interpreter start-up); outcomes by domain."""
        return reconcile(self.settings(**settings), site)

    # -- the server -----------------------------------------------------------------------------

    def on_disk(self, domain: str | None = None, base: Path | None = None) -> SiteOnDisk:
        return SiteOnDisk(base or self.base, domain or self.domain)

    def deployments(self, domain: str | None = None) -> Path:
        return self.on_disk(domain).deployments

    def releases(self, domain: str | None = None) -> list[str]:
        return self.on_disk(domain).releases()

    def active(self, domain: str | None = None) -> str | None:
        return self.on_disk(domain).active()

    # -- the CLI and the daemon -----------------------------------------------------------------

    def flags(self, repo: Path | None = None) -> list[str]:
        """The global options every CLI call gets: this world's config, repository and state."""
        return ["--config", str(self.config), "--repo", str(repo or self.decl), "--state-dir", str(self.state)]

    def history_rows(self, domain: str | None = None) -> list[dict[str, Any]]:
        """`history D --json` through the CLI in this process."""
        rc, out, err = self.run_cli("history", domain or self.domain, "--json")
        assert rc == 0, err
        rows: list[dict[str, Any]] = json.loads(out)
        return rows

    def status_views(self) -> dict[str, dict[str, Any]]:
        """`status --json` through the CLI in this process, by domain."""
        rc, out, err = self.run_cli("status", "--json")
        assert rc == 0, err
        return {view["domain"]: view for view in json.loads(out)}

    def run_cli(self, *args: str, repo: Path | None = None) -> CliRun:
        """`reconciler ARGS` through the real entry point, in this process (no interpreter start-up)."""
        return cli_in_process([*self.flags(repo), *args])

    def run_cli_process(self, *args: str, repo: Path | None = None, env: dict[str, str] | None = None,
                        timeout: float = 90.0, preexec: Callable[[], None] | None = None,
                        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """`python -m reconciler ARGS` as a real separate process: a crash is a traceback and an
        exit status, as an operator sees it."""
        return run_reconciler(*self.flags(repo), *args, cwd=cwd or self.tmp, env=env, timeout=timeout,
                              preexec=preexec)

    @property
    def launcher(self) -> Launcher:
        """Starts daemons on this world's config (needs the `daemons` fixture, which kills them)."""
        if self._launcher is None:
            if self.daemons is None:
                raise AssertionError("this world was made without the `daemons` fixture: it cannot start daemons")
            self._launcher = self.daemons.launcher(self.tmp, self.config)
        return self._launcher

    def start_daemon(self, env: dict[str, str] | None = None, log: Path | None = None) -> DaemonProcess:
        """`reconciler --config CFG run` as a real process in its own session."""
        return self.launcher.start(env, log)

    def diagnostics(self) -> str:
        return self._launcher.diagnostics() if self._launcher is not None else ""

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
        """wait_until with this world's diagnostics on failure."""
        return wait_until(predicate, timeout, what, self.diagnostics)


def neutral_world(tmp: Path, monkeypatch: pytest.MonkeyPatch, cls: type[W] = World) -> W:  # type: ignore[assignment]
    """A fresh World for CLI tests, run from a neutral cwd: no $RECONCILER_CONFIG, no
    ./reconciler.toml and no ./state of the project's checkout can leak in."""
    monkeypatch.delenv("RECONCILER_CONFIG", raising=False)
    cwd = tmp / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cls.create(tmp)
