"""Support for the fault suite: one "world" per case (app repo, declarations repo, a base path on
the real sshd "server", a state dir and a config file) driven through the REAL CLI in separate
processes, plus the case table printed at the end of the session.

Nothing here mocks the reconciler: faults are a SIGKILL the process deals itself
(RECONCILER_FAULT), a killed sshd, a full filesystem, or junk put on the server's disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.core.layout import sort_releases
from tests import support
from tests.support import LOCK_NAME as LOCK_NAME  # this module's public names, kept
from tests.support import (
    SiteOnDisk,
    git,
    make_app_repo,
    make_decl_repo,
    reconcile,
    reconciler_process,
    settings_for,
    write_config,
)
from tests.support import release_time as release_time
from tests.support.sshd import SshServer

DOMAIN = "shop.example.com"
USER_FILE = "storage/app/user-upload.bin"  # user data under shared/
ENV_FILE = ".env"
CLI_TIMEOUT = 90.0


# -- repositories ---------------------------------------------------------------------------------


def make_bulky_app(path: Path, commits: int = 12, files_per_commit: int = 60) -> Path:
    """A Laravel-like app with some history and a work tree big enough that a clone plus
    checkout takes a noticeable moment (so a kill 50 ms into the clone lands mid-clone)."""
    make_app_repo(path)
    for c in range(commits):
        block = path / "app" / f"module{c:02d}"
        block.mkdir(parents=True)
        for f in range(files_per_commit):
            # Distinct, poorly compressible content: the checkout must really write it.
            (block / f"Class{f:03d}.php").write_text(
                f"<?php // {c}/{f}\n" + secrets.token_hex(1024) + "\n")
        git(path, "add", "-A")
        git(path, "commit", "-q", "-m", f"module {c}")
    return path


# -- processes on the "server" ----------------------------------------------------------------------


def processes_touching(root: Path) -> list[str]:
    """Processes (other than us) whose cwd or command line is under `root`: remote commands a
    killed reconciler left running (sshd does not signal a session's children on disconnect)."""
    needle = str(root)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cwd.startswith(needle) or needle in cmdline:
            found.append(f"{entry}: {cmdline.strip()[:120]}")
    return found


# -- one world per case ---------------------------------------------------------------------------


@dataclass
class World(support.World):
    """One case: its site on the sshd (`server`) or on "local" (None), driven through the real CLI
    in separate processes (`reconcile`, `cli`, `popen`); setup passes run in this process."""

    scoped: bool = False  # True when the world shares a declarations repo with other sites
    user_bytes: bytes = b""
    env_bytes: bytes = b""
    orphans_seen: list[str] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, tmp: Path, server: SshServer | None = None, *, app: Path | None = None,  # type: ignore[override]
               base: Path | None = None, **config: Any) -> World:
        return super().create(tmp, server, app=app, base=base, concurrency=2, **config)

    @property
    def site(self) -> SiteOnDisk:
        return self.on_disk()

    @property
    def shared(self) -> Path:
        return self.site.deployments / "shared"

    def declare(self, server: str | None = None, **fields: Any) -> Path:  # type: ignore[override]
        """This world's site; `fields` accumulate over calls (a later call changes only what it names)."""
        self.fields.update(fields)
        return super().declare(self.domain, server=server, **self.fields)

    def set_up_live(self, **fields: Any) -> None:
        """A good release live. Built through the LOCAL transport (same machine, same files,
        same layout as through sshd) to save SSH round trips; the declaration then names the
        sshd server, and every fault and recovery pass goes over SSH. Changing `server` is not
        part of the build key, so nothing is rebuilt."""
        self.declare(server="local", **fields)
        self.converge_in_process()
        if self.server is not None:
            self.declare()

    # -- passes -----------------------------------------------------------------------------------

    def converge_in_process(self) -> None:
        """A setup pass in this process (no interpreter start-up); must end Synced."""
        outcome = self.reconcile_in_process(self.domain)[self.domain]
        assert outcome.sync == "Synced", f"setup pass did not converge: {outcome}"

    def flags(self, repo: Path | None = None) -> list[str]:
        return ["--config", str(self.config)]  # repo and state come from the config (a fleet shares them)

    def cli(self, *args: str, fault: str | None = None, preexec: Callable[[], None] | None = None,
            timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """`python -m reconciler --config CFG ...` as a real separate process."""
        return self.run_cli_process(*args, env={"RECONCILER_FAULT": fault} if fault else None, timeout=timeout,
                                    preexec=preexec)  # preexec: only the full-disk fallback (RLIMIT_FSIZE)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return reconciler_process(*self.flags(), *args, cwd=self.tmp)

    def reconcile(self, fault: str | None = None, preexec: Callable[[], None] | None = None,
                  ) -> subprocess.CompletedProcess[str]:
        """`reconcile` in a real process (only this world's site when it shares a fleet)."""
        scope = ("--site", self.domain) if self.scoped else ()
        return self.cli("reconcile", *scope, fault=fault, preexec=preexec)

    def read_cli(self, *args: str) -> str:
        """Read-only commands (status, history) through the real CLI entry point, in this
        process: a new interpreter per query would only add start-up time."""
        rc, out, err = self.run_cli(*args)
        assert rc == 0, f"reconciler {' '.join(args)}: exit {rc}\n{out}{err}"
        return out

    def status(self) -> dict[str, Any]:
        views = {v["domain"]: v for v in json.loads(self.read_cli("status", "--json"))}
        return dict(views[self.domain])

    def history(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(self.read_cli("history", self.domain, "--json"))
        return rows

    # -- user data in shared/ ---------------------------------------------------------------------

    def seed_user_data(self) -> None:
        """Known bytes in shared/storage (an upload) and shared/.env, as a live site would have."""
        self.user_bytes = secrets.token_bytes(4096) + b"\x00\xffuser data\n"
        self.env_bytes = f"APP_KEY=base64:{secrets.token_hex(16)}\nDB_PASSWORD='s3cr3t $x'\n".encode()
        upload = self.shared / USER_FILE
        upload.parent.mkdir(parents=True, exist_ok=True)
        upload.write_bytes(self.user_bytes)
        (self.shared / ENV_FILE).write_bytes(self.env_bytes)

    def data_problems(self) -> list[str]:
        """How shared data differs from what was seeded (empty list: intact byte for byte)."""
        problems = []
        for name, expected in ((USER_FILE, self.user_bytes), (ENV_FILE, self.env_bytes)):
            path = self.shared / name
            try:
                actual = path.read_bytes()
            except OSError as exc:
                problems.append(f"shared/{name}: {exc.__class__.__name__}")
                continue
            if actual != expected:
                problems.append(f"shared/{name}: content changed ({len(actual)} bytes, expected {len(expected)})")
        # The live release must see the same data through its shared links.
        with contextlib.suppress(OSError):
            through = (self.site.link / USER_FILE).read_bytes()
            if through != self.user_bytes:
                problems.append("live release: storage link does not show the user data")
        return problems

    def site_resolves(self) -> bool:
        try:
            os.stat(self.site.link)
        except OSError:
            return False
        return True

    # -- releases -----------------------------------------------------------------------------------

    def manifest_status(self, release: str) -> str:
        try:
            return str(self.site.manifest(release).get("status"))
        except FileNotFoundError:
            return "missing"
        except (ValueError, OSError):
            return "corrupt"

    def releases(self, domain: str | None = None) -> list[str]:
        """Release directories (not symlinks to one), oldest first by encoded time; junk names skipped."""
        d = self.on_disk(domain).deployments
        if not d.is_dir():
            return []
        return sort_releases(p.name for p in d.iterdir() if p.is_dir() and not p.is_symlink())

    def updating_releases(self) -> list[str]:
        return [r for r in self.releases() if self.manifest_status(r) == "updating"]

    def lock_present(self) -> bool:
        return self.site.lock.exists()

    def wait_for_orphans(self, timeout: float = 20.0) -> None:
        """Let remote commands a killed reconciler left behind finish; remember that they existed."""
        deadline = time.monotonic() + timeout
        first = True
        while True:
            left = processes_touching(self.site.deployments)
            if first and left:
                self.orphans_seen.extend(left)
            first = False
            if not left:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"remote commands still running {timeout:.0f}s after the kill: {left}")
            time.sleep(0.05)

    def diagnostics(self) -> str:
        parts = [f"releases: {[(r, self.manifest_status(r)) for r in self.releases()]}"]
        with contextlib.suppress(OSError):
            parts.append(f"link: {os.readlink(self.site.link)}")
        with contextlib.suppress(Exception):
            parts.append("history: " + json.dumps(self.history()))
        return "\n".join(parts)


@dataclass
class Fleet:
    """Many independent sites (one per case) declared in ONE declarations repo on one server,
    each with its own app repo and base path. Setting them all up takes one concurrent pass
    instead of one pass per case; each case then only ever runs `reconcile --site D`."""

    tmp: Path
    server: SshServer
    decl: Path
    state: Path
    config: Path
    worlds: dict[str, World] = field(default_factory=dict)

    @classmethod
    def create(cls, tmp: Path, server: SshServer) -> Fleet:
        decl = make_decl_repo(tmp / "decl")
        state = tmp / "state"
        cfg = write_config(tmp / "reconciler.toml", repo=decl, state=state, server=server, concurrency=16)
        return cls(tmp, server, decl, state, cfg)

    def add(self, key: str, app: Path | None = None, **fields: Any) -> World:
        home = self.tmp / key
        home.mkdir()
        base = home / "srv"
        base.mkdir()
        world = World(home, self.server, app or make_app_repo(home / "app"), self.decl, base, self.state,
                      self.config, domain=f"{key}.faults.example", scoped=True)
        world.declare(server="local", **fields)
        self.worlds[key] = world
        return world

    def converge_all(self) -> None:
        """One concurrent setup pass over every site (local transport, see World.set_up_live)."""
        outcomes = reconcile(settings_for(self.decl, self.state, concurrency=16))
        bad = {d: o for d, o in outcomes.items() if o.sync != "Synced"}
        assert not bad, f"fleet setup pass did not converge: {bad}"

    def go_remote(self) -> None:
        """From now on every site is declared on the sshd server."""
        for world in self.worlds.values():
            world.declare()


# -- the case table -------------------------------------------------------------------------------


@dataclass
class CaseRow:
    case: str
    outcome: str = ""
    site_lost: int = 0
    data_lost: int = 0
    result: str = "pass"
    notes: list[str] = field(default_factory=list)


@dataclass
class FaultTable:
    rows: list[CaseRow] = field(default_factory=list)

    @contextlib.contextmanager
    def case(self, name: str, world: Callable[[], World | None]) -> Iterator[CaseRow]:
        """Record one case. At the end (pass or fail) the site must still resolve and shared data
        must be intact: both are counted in the table and asserted."""
        row = CaseRow(name)
        self.rows.append(row)
        try:
            yield row
        except BaseException as exc:
            row.result = "FAIL: " + (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise
        finally:
            w = world()
            if w is not None and w.user_bytes:  # only once the case got as far as seeding user data
                row.site_lost = 0 if w.site_resolves() else 1
                row.data_lost = 1 if w.data_problems() else 0
                if w.orphans_seen:
                    row.notes.append(f"{len(w.orphans_seen)} remote cmd(s) outlived the kill")
        assert row.site_lost == 0, f"{name}: site path {w.site.link if w else '?'} no longer resolves"
        assert row.data_lost == 0, f"{name}: shared data lost: {w.data_problems() if w else '?'}"

    def render(self) -> str:
        headers = ["CASE", "OUTCOME", "SITE LOST", "DATA LOST", "RESULT"]
        lines = [[r.case, r.outcome + (f" ({'; '.join(r.notes)})" if r.notes else ""), str(r.site_lost),
                  str(r.data_lost), r.result] for r in self.rows]
        widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(headers)]
        out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
        out.append("  ".join("-" * w for w in widths))
        out += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines]
        failed = sum(1 for r in self.rows if r.result != "pass")
        out.append("")
        out.append(f"cases tried: {len(self.rows)}   failed: {failed}   "
                   f"sites lost: {sum(r.site_lost for r in self.rows)}   "
                   f"data lost: {sum(r.data_lost for r in self.rows)}")
        return "\n".join(out)

    def publish(self) -> Path:
        text = self.render()
        fd, name = tempfile.mkstemp(prefix="reconciler-faults-", suffix=".txt")
        with os.fdopen(fd, "w") as handle:
            handle.write(text + "\n")
        print("\n=== fault suite: cases -> outcome ===")
        print(text)
        print(f"(table written to {name})")
        return Path(name)


