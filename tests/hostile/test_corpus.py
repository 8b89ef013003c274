"""Hostile declarations (SPEC §2), end to end through the real CLI in a subprocess.

The corpus (tests/hostile/corpus.py) is committed to real declarations repositories, one per
batch, next to a good site on "local" (and, where the batch has SSH cases, one on the real
sshd). One `reconcile`, one `status --json` and two `validate` runs (work tree and bare clone)
per batch; then, per case:
  (a) the site is Invalid in `status --json` and `validate` exits 1, with an error
      `sites.d/<file>:<line>: <key>: <message>` (whole-file errors: the key may be absent or `file`);
  (b) nothing ran: no canary of the case anywhere, nothing of the site under any base path;
  (c) the good sites are Synced;
  (d) no command crashed (exit 1, no traceback).
Then values that are valid but full of metacharacters must deploy as data.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.declaration_files import parse_site
from reconciler.core.declarations import InvalidSite
from reconciler.core.layout import shared_link_target
from tests.hostile.corpus import (
    BATCHES,
    CASES,
    SCRIPT_SUFFIX,
    SECRETS,
    STRESS_CASES,
    Case,
    Ctx,
    declaration,
    key_line,
)
from tests.support import ROOT, World, git, make_app_repo, make_decl_repo, run_reconciler, write_config
from tests.support.sshd import SshServer

GOOD = "good.example.com"
GOOD_SSH = "good-ssh.example.com"
PARSE_BUDGET = 1.0  # seconds: one declaration file, however hostile, is judged within this
MESSAGE_LIMIT = 16 * 1024  # characters: a report about one (at most 64 kB) file that an operator can read
HARD_STOP = 3 * PARSE_BUDGET  # a slower judgement is interrupted, so a slow bug cannot stall the suite
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
ORIGINAL_CWD = Path.cwd()
HOME = Path.home()
# Places a leaked relative or traversed path would land; none of them may gain a `deployments/`.
OUTSIDE = (Path("/etc"), Path("/home"), Path("/"), Path("/tmp"), HOME, ORIGINAL_CWD)


# --------------------------------------------------------------------------- running the CLI


@dataclass
class Run:
    args: tuple[str, ...]
    rc: int
    out: str
    err: str
    seconds: float

    def __str__(self) -> str:
        return (f"`reconciler {' '.join(self.args)}` exited {self.rc} after {self.seconds:.1f}s\n"
                f"--- stdout (tail)\n{self.out[-1000:]}\n--- stderr (tail)\n{self.err[-1500:]}")


def cli(config: Path, repo: Path, state: Path, cwd: Path, *args: str) -> Run:
    """The real CLI in a fresh interpreter: a crash is a traceback and an exit status, as an operator sees it."""
    argv = ("--config", str(config), "--repo", str(repo), "--state-dir", str(state), *args)
    started = time.monotonic()
    done = run_reconciler(*argv, cwd=cwd, timeout=900)
    return Run(args, done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def ssh_config(path: Path, server: SshServer) -> Path:
    """The config every run gets: the sshd's keys, and room for slow hostile batches."""
    return write_config(path, server=server, interval=None, concurrency=8, command_timeout=60.0)


def canaries(*roots: Path) -> list[Path]:
    """Every file whose name starts with CANARY: recursively under `roots`, and directly in the
    places a relative `touch` lands (the shells' cwd and $HOME) or a stray absolute one would."""
    found = [p for d in (*OUTSIDE, ROOT) if d.is_dir() for p in d.glob("CANARY*")]
    for root in roots:
        found += root.rglob("CANARY*")
    return sorted(set(found))


def outside_deployments() -> set[Path]:
    return {d / "deployments" for d in OUTSIDE if os.path.lexists(d / "deployments")}


# --------------------------------------------------------------------------- one batch: repo, reconcile, reports


@dataclass
class Batch:
    name: str
    root: Path
    cwd: Path
    decl: Path
    bases: dict[str, Path]
    cases: list[Case]
    ctx: dict[str, Ctx]
    bodies: dict[str, str]
    good: tuple[str, ...]
    home_before: set[str]
    outside_before: set[Path]
    runs: dict[str, Run] = field(default_factory=dict)
    views: dict[str, dict[str, Any]] = field(default_factory=dict)

    def base_of(self, domain: str) -> Path:
        return self.bases["ssh" if domain == GOOD_SSH else "local"]


def build_batch(name: str, root: Path, server: SshServer) -> Batch:
    cases = [c for c in CASES if c.batch == name]
    cwd, canary_dir = root / "cwd", root / "canaries"
    cwd.mkdir()
    canary_dir.mkdir()  # so an absolute `touch` that ever ran would leave its file
    app = make_app_repo(root / "app")
    decl = make_decl_repo(root / "decl")
    bases = {"local": root / "srv", "ssh": root / "srv-ssh"}
    for base in bases.values():
        base.mkdir()
    sites = decl / "sites.d"
    ctxs: dict[str, Ctx] = {}
    bodies: dict[str, str] = {}
    for case in cases:
        ctx = Ctx(server.destination if case.ssh else "local", str(bases["ssh" if case.ssh else "local"]),
                  str(app), str(canary_dir / case.token), case.token)
        ctxs[case.id] = ctx
        path = sites / case.name
        body = case.body(ctx) if case.body is not None else b""
        bodies[case.id] = body.decode(errors="replace")
        if case.kind == "file":
            path.write_bytes(body)
        elif case.kind == "symlink":
            os.symlink(case.target, path)
            if case.target == f"../{SECRETS}":  # a valid declaration whose script is the canary
                (decl / SECRETS).write_bytes(declaration(ctx))
        elif case.kind == "dir":
            path.mkdir()
            (path / "inner.toml").write_bytes(body)
        elif case.kind == "submodule":
            git(decl, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(app), f"sites.d/{case.name}")
        else:
            raise AssertionError(case.kind)
    good = [GOOD]
    local_good = Ctx("local", str(bases["local"]), str(app), "", "")
    (sites / f"{GOOD}.toml").write_bytes(declaration(local_good, {"script": "echo good\n"}))
    if any(c.ssh for c in cases):
        good.append(GOOD_SSH)
        ssh_good = Ctx(server.destination, str(bases["ssh"]), str(app), "", "")
        (sites / f"{GOOD_SSH}.toml").write_bytes(declaration(ssh_good, {"script": "echo good\n"}))
    git(decl, "add", "-A")
    git(decl, "commit", "-q", "-m", f"hostile corpus: {name}")
    bare = root / "decl.git"
    git(root, "clone", "-q", "--bare", str(decl), str(bare))

    batch = Batch(name, root, cwd, decl, bases, cases, ctxs, bodies, tuple(good),
                  {p.name for p in HOME.iterdir()}, outside_deployments())
    config, state = ssh_config(root / "reconciler.toml", server), root / "state"
    batch.runs["reconcile"] = cli(config, decl, state, cwd, "reconcile")
    batch.runs["status"] = cli(config, decl, state, cwd, "status", "--json")
    batch.runs["validate"] = cli(config, decl, state, cwd, "validate", str(decl))
    batch.runs["validate-bare"] = cli(config, decl, state, cwd, "validate", str(bare))
    if batch.runs["status"].rc == 0:
        batch.views = {v["domain"]: v for v in json.loads(batch.runs["status"].out)}
    return batch


class Batches:
    """Each batch is built and reconciled once, on first use."""

    def __init__(self, factory: pytest.TempPathFactory, server: SshServer) -> None:
        self._factory, self._server = factory, server
        self._built: dict[str, Batch] = {}

    def __getitem__(self, name: str) -> Batch:
        if name not in self._built:
            self._built[name] = build_batch(name, self._factory.mktemp(f"hostile-{name}"), self._server)
        return self._built[name]


@pytest.fixture(name="batches", scope="module")
def batches_fixture(tmp_path_factory: pytest.TempPathFactory, sshd_session: SshServer) -> Iterator[Batches]:
    yield Batches(tmp_path_factory, sshd_session)


# --------------------------------------------------------------------------- assertions


def error_pattern(case: Case, body: str) -> str:
    """The regex an error of `case` must match, anchored at the start of one error."""
    file_re = case.file_re or re.escape(f"sites.d/{case.name}")
    lines = case.lines
    if not lines:
        assert case.key is not None, f"{case.id}: a whole-file case must list its lines"
        lines = (key_line(body, case.key),)
    line_re = "(?:" + "|".join(str(n) for n in lines) + ")"
    key_re = re.escape(case.key) + ": " if case.key else "(?:file: )?"
    return f"{file_re}:{line_re}: {key_re}\\S"


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Interrupt the (pure Python) code in the block after `seconds`, with TimeoutError."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds:.0f}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def judge(name: str, data: bytes) -> tuple[Any, float]:
    """parse_site under the hard stop: (result, seconds)."""
    started = time.monotonic()
    with deadline(HARD_STOP):
        result = parse_site(name, data)
    return result, time.monotonic() - started


def is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def assert_no_crash(batch: Batch) -> None:
    problems = []
    for label, expected in (("reconcile", 1), ("status", 0), ("validate", 1), ("validate-bare", 1)):
        run = batch.runs[label]
        if "Traceback" in run.err:
            last = run.err.strip().splitlines()[-1]
            problems.append(f"`{label}` crashed ({last}) after {run.seconds:.1f}s")
        elif run.rc != expected:
            problems.append(f"`{label}` exited {run.rc}, not {expected}:\n{run}")
    assert not problems, f"batch {batch.name}: " + "; ".join(problems) + f"\n{batch.runs['reconcile']}"


def assert_reported(case: Case, batch: Batch) -> None:
    """Every report of the case is checked before failing, so one failure says where it is missing."""
    pattern = error_pattern(case, batch.bodies[case.id])
    problems: list[str] = []
    # Under its stem; a name that is not UTF-8 may be shown escaped, so find it by its error too.
    views = [v for v in batch.views.values() if v["domain"] == case.domain] or [
        v for v in batch.views.values() if re.search(pattern, v["message"])]
    if not views:
        problems.append("not in `status --json`")
    else:
        view = views[0]
        message = view["message"]
        if view["sync"] != "Invalid":
            problems.append(f"status says {view['sync']}/{view['health']}: {message!r}")
        elif CONTROL_RE.search(message):
            problems.append(f"the message carries raw control characters: {message!r}")
        elif not is_utf8(message):
            problems.append(f"the message is not UTF-8 text (lone surrogates): {message!r}")
        elif len(message) > MESSAGE_LIMIT:
            problems.append(f"the message is {len(message)} characters long: {message[:300]!r}...")
        elif not re.search(f"(?:^|; ){pattern}", message):
            problems.append(f"the status message does not match /{pattern}/: {message[:1000]!r}")
    for label in ("validate", "validate-bare"):
        if not re.search(f"^{pattern}", batch.runs[label].out, re.MULTILINE):
            problems.append(f"`{label}` does not report /{pattern}/")
    assert not problems, f"{case.domain!r}: " + "; ".join(problems)


def assert_nothing_ran(case: Case, batch: Batch) -> None:
    mine = {case.token, case.token + SCRIPT_SUFFIX, "CANARY"}
    found = [p for p in canaries(batch.root) if p.name in mine]
    assert not found, f"the payload of {case.id} ran: {found}"
    for base in batch.bases.values():
        assert case.domain not in os.listdir(base), f"{base} gained an entry for {case.domain!r}"
        deployments = base / "deployments"
        if deployments.is_dir():
            assert case.domain not in os.listdir(deployments), f"{deployments} gained {case.domain!r}"
    assert case.domain not in os.listdir(HOME) or case.domain in ("", ".", ".."), f"$HOME gained {case.domain!r}"


def assert_good_synced(batch: Batch) -> None:
    for domain in batch.good:
        view = batch.views.get(domain)
        assert view is not None and (view["sync"], view["health"]) == ("Synced", "Healthy"), view
        assert (batch.base_of(domain) / domain / "public" / "index.php").is_file()


# --------------------------------------------------------------------------- the corpus, per case


@pytest.mark.parametrize("case", CASES, ids=[f"{c.batch}-{c.id}" for c in CASES])
def test_hostile_declaration_is_invalid_and_inert(case: Case, batches: Batches) -> None:
    batch = batches[case.batch]
    assert_no_crash(batch)  # (d)
    assert_reported(case, batch)  # (a)
    assert_nothing_ran(case, batch)  # (b)
    assert_good_synced(batch)  # (c)


FILE_CASES = [c for c in CASES if c.kind == "file"] + STRESS_CASES


@pytest.mark.parametrize("case", FILE_CASES, ids=[f"{c.batch}-{c.id}" for c in FILE_CASES])
def test_each_file_alone_is_judged_quickly(case: Case, tmp_path: Path) -> None:
    """The same file through parse_site alone: never raises, Invalid, within the budget
    (a daemon re-reads every declaration on each change)."""
    assert case.body is not None
    ctx = Ctx("local", str(tmp_path / "srv"), str(tmp_path / "app"), str(tmp_path / case.token), case.token)
    data = case.body(ctx)
    result, elapsed = judge(f"sites.d/{case.name}", data)
    assert isinstance(result, InvalidSite), result
    assert elapsed < PARSE_BUDGET, f"{len(data)} bytes took {elapsed:.1f}s to reject ({len(result.errors)} errors)"


def test_huge_valid_shared_list_is_judged_quickly() -> None:
    """6,000 distinct shared entries fit in 64 kB; a site shares a handful, so more than the cap is
    refused with a clear message, and judging stays fast either way."""
    entries = [f"s{i}" for i in range(6_000)]
    data = declaration(Ctx("local", "/srv/www", "/srv/git/app.git", "", ""), {"shared": entries})
    assert len(data) < 64 * 1024
    result, elapsed = judge("sites.d/wide.example.com.toml", data)
    assert isinstance(result, InvalidSite) and "shared: more than 256 entries" in result.message, result
    assert elapsed < PARSE_BUDGET, f"{len(entries)} shared entries took {elapsed:.1f}s to validate"
    result, _ = judge("sites.d/wide.example.com.toml",
                      declaration(Ctx("local", "/srv/www", "/srv/git/app.git", "", ""), {"shared": entries[:256]}))
    assert not isinstance(result, InvalidSite), result.errors


@pytest.mark.parametrize("name", BATCHES)
def test_batch_leaves_nothing_behind(name: str, batches: Batches) -> None:
    """Whatever the corpus did, only the good sites exist, nowhere else gained anything."""
    batch = batches[name]
    assert_no_crash(batch)
    assert canaries(batch.root) == []
    allowed = {"deployments", *batch.good}
    for base in batch.bases.values():
        extra = set(os.listdir(base)) - allowed
        assert not extra, f"{base} holds {sorted(extra)}"
        if (base / "deployments").is_dir():
            assert set(os.listdir(base / "deployments")) <= set(batch.good)
    assert os.listdir(batch.cwd) == [], "something was created relative to the reconciler's cwd"
    assert set(os.listdir(batch.root)) <= {"cwd", "canaries", "app", "decl", "decl.git", "srv", "srv-ssh",
                                           "state", "reconciler.toml"}
    assert os.listdir(batch.root / "canaries") == []
    suspicious = {n for n in {p.name for p in HOME.iterdir()} - batch.home_before
                  if n in ("deployments", "srv", "~", "-x") or "CANARY" in n or n.endswith(".example.com")}
    assert not suspicious, f"$HOME gained {sorted(suspicious)}"
    assert outside_deployments() == batch.outside_before


# --------------------------------------------------------------------------- valid values full of metacharacters

# Branch names git accepts (checked below) that a shell would not take literally.
META_BRANCHES = {
    "branch-semicolon.example.com": "feature/a;b",
    "branch-subst.example.com": "feature/$(touch${IFS}CANARY_valid-branch)",
    "branch-backtick.example.com": "x`touch${IFS}CANARY_valid-branch`",
    "branch-quotes.example.com": "q'uo\"te",
    "branch-pipes.example.com": "p|i&p>e<",
    "branch-braces.example.com": "{brace}!#%=,+$HOME",
}
META_SHARED = ["storage", ".env", "sh;touch${IFS}CANARY_valid-shared", "$(touch${IFS}CANARY_valid-shared)",
               "`touch${IFS}CANARY_valid-shared`", "a b", "~", "*", "q'\"\\", "x/-rf", "$HOME", "new\\nline"]


@dataclass
class ValidWorld(World):
    """Valid values full of metacharacters, declared next to each other and committed at once
    (`commit()`); the CLI runs as a real process in a neutral cwd."""

    @property
    def root(self) -> Path:
        return self.tmp

    @property
    def cwd(self) -> Path:
        return self.tmp / "cwd"

    def run(self, *args: str) -> Run:
        return cli(self.config, self.decl, self.state, self.cwd, *args)

    def views(self) -> dict[str, dict[str, Any]]:
        run = self.run("status", "--json")
        assert run.rc == 0, run
        return {v["domain"]: v for v in json.loads(run.out)}

    def declare(self, domain: str | None = None, *, server: str | None = None, commit: bool = False,
                **fields: Any) -> Path:
        """On "local" unless told; written, not committed (see `commit`); every site gets a script."""
        return super().declare(domain, server=server or "local", commit=commit, **{"script": "echo built\n", **fields})

    def commit(self) -> None:
        git(self.decl, "add", "-A")
        git(self.decl, "commit", "-q", "-m", "declare")


@pytest.fixture(name="world")
def world_fixture(tmp_path: Path, sshd_session: SshServer) -> ValidWorld:
    world = ValidWorld.create(tmp_path, sshd_session, interval=None, concurrency=8, command_timeout=60.0)
    world.cwd.mkdir()
    return world


def assert_deployed(base: Path, domain: str, content: str | None = None, shared: list[str] | None = None) -> None:
    link = base / domain
    target = os.readlink(link)
    assert target.startswith(f"deployments/{domain}/"), target
    release = base / target
    index = (link / "public" / "index.php").read_text()
    if content is not None:
        assert content in index, index
    for entry in shared or []:
        inside = release / entry
        assert inside.is_symlink() and os.readlink(inside) == shared_link_target(entry), entry
        assert os.path.lexists(base / "deployments" / domain / "shared" / entry), entry


def test_valid_metacharacter_values_deploy_as_data(world: ValidWorld) -> None:
    """Values the rules allow but a shell would not take literally reach the server as data:
    base paths, branch names, a repository path and shared entries, over local and SSH."""
    home_before = {p.name for p in HOME.iterdir()}
    for domain, branch in META_BRANCHES.items():
        assert subprocess.run(["git", "check-ref-format", "--branch", branch], capture_output=True).returncode == 0
        git(world.app, "checkout", "-q", "-b", branch, "main")
        (world.app / "public" / "index.php").write_text(f"<?php echo 'branch {domain}';\n")
        git(world.app, "commit", "-q", "-am", domain)
        world.declare(domain, branch=branch)
    git(world.app, "checkout", "-q", "main")
    weird_app = world.root / "app;$(touch${IFS}CANARY_valid-repo)`touch${IFS}CANARY_valid-repo`'\"|&>*~"
    git(world.root, "clone", "-q", str(world.app), str(weird_app))
    # base_path is a plain path ([A-Za-z0-9._/-]): shell metacharacters in it are
    # Invalid (tests/hostile/test_nginx.py), but leading dashes and dots still must reach the server as data.
    bases = {
        "base-dash.example.com": world.root / "-rf--x",
        "base-dots.example.com": world.root / "..x" / "-n" / ".a_b-c",
    }
    for domain, base in bases.items():
        world.declare(domain, base_path=str(base))
    world.declare("repo-path.example.com", repository=str(weird_app))
    world.declare("shared-meta.example.com", shared=META_SHARED)
    ssh_base = world.root / "-ssh--rf" / "..x"
    world.declare("ssh-meta.example.com", server=world.server.destination, base_path=str(ssh_base),
                  branch=META_BRANCHES["branch-subst.example.com"], shared=META_SHARED)
    world.commit()

    first = world.run("reconcile")
    assert first.rc == 0 and "Traceback" not in first.err, first
    views = world.views()
    assert all((v["sync"], v["health"]) == ("Synced", "Healthy") for v in views.values()), views
    srv = world.root / "srv"
    for domain in META_BRANCHES:
        assert_deployed(srv, domain, f"branch {domain}")
    for domain, base in bases.items():
        assert_deployed(base, domain, "v1")
    assert_deployed(srv, "repo-path.example.com", "v1")
    assert_deployed(srv, "shared-meta.example.com", "v1", META_SHARED)
    assert_deployed(ssh_base, "ssh-meta.example.com", "branch branch-subst.example.com", META_SHARED)
    releases = {d: v["active_release"] for d, v in views.items()}

    second = world.run("reconcile")  # the probe reads these paths back: still converged, nothing rebuilt
    assert second.rc == 0, second
    assert {d: v["active_release"] for d, v in world.views().items()} == releases

    assert canaries(world.root) == []
    assert os.listdir(world.cwd) == []
    new_in_home = {p.name for p in HOME.iterdir()} - home_before
    assert not {n for n in new_in_home if n in ("~", "*", "$HOME", "a b") or "CANARY" in n}, new_in_home


def test_accepted_but_hostile_values_fail_without_running(world: ValidWorld) -> None:
    """Repository URLs that pass the letter of §2 (no leading '-', no whitespace) but smuggle an
    option into git's ssh: a host starting with '-' is refused at validation (Invalid); one only
    git can see through must fail there. Either way the site is not Synced and nothing runs."""
    # Relative canaries: a ProxyCommand would run in the reconciler's cwd (local) or $HOME (ssh).
    hostile = {
        "ssh-url-option-host.example.com": "ssh://-oProxyCommand=touch${IFS}CANARY_accepted/x.git",
        "scp-option-host.example.com": "git@-oProxyCommand=touch${IFS}CANARY_accepted:x.git",
        "ssh-url-option-user.example.com": "ssh://-oProxyCommand=touch${IFS}CANARY_accepted@localhost/x.git",
    }
    for domain, repository in hostile.items():
        world.declare(domain, repository=repository)
    world.declare(GOOD, script="echo good\n")
    world.commit()
    run = world.run("reconcile")
    assert run.rc == 1 and "Traceback" not in run.err, run
    views = world.views()
    assert views[GOOD]["sync"] == "Synced", views[GOOD]
    for domain in hostile:
        assert views[domain]["sync"] != "Synced", views[domain]
        assert not os.path.lexists(world.root / "srv" / domain)
        assert not (world.root / "srv" / "deployments" / domain).exists()
    assert canaries(world.root) == []
