"""The blast-radius matrix: for each step of a reconcile, a fault or a
malformed datum on site A must stay A's problem.

World of every case (tests/faults/blast_support.py, the REAL reconciler as a separate process):

    A  x-bad.blast.example    server "local", base path srv-1     the fault
    B  b-same.blast.example   server "local", base path srv-1     same server as A
    C  c-other.blast.example  the real sshd (tests/support/sshd.py)       another server

All three are live at v1 (a setup pass of the code under test); then the fault is planted on A,
and A's app and B/C's app each get a new commit, so all three are due a deploy. A is probed after
B (domain order), so a record forged in A's data would land on B.

Two modes per case:
- CLI: `reconciler reconcile` once. It exits 1 (0 only when A may legitimately end Synced, e.g.
  Degraded after a failed reload) without a traceback; B and C are deployed at the new commit and
  `status --json` says so (Synced/Healthy, active = desired = new head); A reports its fault.
- daemon: `reconciler run` as a process. It stays up; B and C reach Synced with the new commit
  and are never reported Failed/Unknown/Invalid/Degraded on the way (status is sampled every
  second); A reports its fault (the first report counts: a later round may legitimately judge A
  again); SIGTERM stops it cleanly and its log shows no task that died unseen.

"Wrongly affected" counts B and C (not deployed, stale or wrong status, releases lost): it must
be 0. The table `case | CLI wrongly affected | daemon wrongly affected` (plus A's outcome and any
other finding) is printed at the end of the module (visible with `-s`) and written to a file.

The faults are real: junk files, a foreign lock, a regular file where a directory belongs, a
commit object missing from A's repository, `chattr +i` (root ignores permissions, not the
immutable flag), a failing script or reload command, a directory appearing where the site
symlink is. Set RECONCILER_UNDER_TEST=/tmp/oldmain to run the matrix against the old code.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.faults.blast_support import (
    DAEMON_DEATH_MARKERS,
    Lab,
    chattr_available,
    crash_lines,
    foreign_owner,
    plant_lock,
    run_problems,
    sh_quote,
    sibling_problems,
    site_problems,
)
from tests.support import MANIFEST_NAME, SiteOnDisk, app_commit, git, wait_until
from tests.support.process import UNDER_TEST
from tests.support.sshd import SshServer
from tests.support.tarpit import Tarpit

pytestmark = pytest.mark.ssh

A = "x-bad.blast.example"
B = "b-same.blast.example"
C = "c-other.blast.example"
SIBLINGS = (B, C)
# B and C deploy in the daemon's first round (seconds, normally); A shows its fault then too.
DAEMON_TIMEOUT = 45.0
# The daemon's polling interval: its first full pass runs at start; the next one comes late
# enough that A's report of the fault in the first round can be seen before a later round
# re-judges A (a failed reload is not retried, so the next round finds A live and Healthy).
DAEMON_INTERVAL = 6
FAILING = ("Failed", "Unknown")
# A healthy sibling goes Synced -> Progressing/OutOfSync -> Synced; anything else is a wrong report.
WRONG_SYNCS = ("Failed", "Unknown", "Invalid")


# -- one case's world -------------------------------------------------------------------------------


@dataclass
class Blast:
    lab: Lab
    app_a: Path
    app: Path
    srv1: Path
    srv_remote: Path
    head_a: str = ""
    head: str = ""
    before: dict[str, list[str]] = field(default_factory=dict)

    def disk(self, domain: str = A) -> SiteOnDisk:
        return self.lab.disk(domain)


@dataclass(frozen=True)
class Case:
    name: str
    step: str
    inject: Callable[[Blast], None]                     # before the new commits
    keywords: tuple[str, ...]                           # A's message names the cause
    syncs: tuple[str, ...] = FAILING                    # what A may report
    degraded_ok: bool = False                           # A live at the new commit but Degraded is fine
    may_heal: bool = False                              # A may converge over the bad datum instead
    after_commit: Callable[[Blast], None] | None = None
    a_fields: dict[str, Any] = field(default_factory=dict)
    setup_more: Callable[[Blast], None] | None = None
    chattr: bool = False


def _manifest_bomb(b: Blast) -> None:
    release = b.disk().release("01012020-000000")
    release.mkdir()
    (release / MANIFEST_NAME).write_text("[" * 200_000)


def _forged_symlink(b: Blast) -> None:
    """A's site symlink target carries newline-framed records that claim B's site path is a
    real directory (which would make B refuse to deploy)."""
    disk = b.disk()
    live = disk.active()
    disk.link.unlink()
    os.symlink(f"deployments/{A}/{live}\n@site {B}\n@path dir\n@site {A}", disk.link)


def _owner_bomb(b: Blast) -> None:
    plant_lock(b.disk(), "[" * 200_000)


def _foreign_lock(b: Blast) -> None:
    plant_lock(b.disk(), foreign_owner())


def _lock_release_fails(b: Blast) -> None:
    """A's deploy script makes the site's lock directory immutable while the lock is held: the
    release (`rm -rf` of the lock) cannot remove it."""
    lock = b.disk().lock
    b.lab.watch_immutable(lock)
    b.lab.declare(A, script=f"chattr +i -- {sh_quote(lock)}")


def _shared_is_a_file(b: Blast) -> None:
    shared = b.disk().deployments / "shared"
    shutil.rmtree(shared)
    shared.write_text("a file where deployments/<domain>/shared belongs\n")


def _drop_commit_object(b: Blast) -> None:
    """A's repository lists the new head (ls-remote works) but lost its commit object: the
    clone step cannot check it out."""
    loose = b.app_a / ".git" / "objects" / b.head_a[:2] / b.head_a[2:]
    loose.unlink()


def _shared_unwritable(b: Blast) -> None:
    """shared/storage is gone and shared/ is immutable: seeding it from the release fails."""
    shared = b.disk().deployments / "shared"
    shutil.rmtree(shared / "storage")
    b.lab.make_immutable(shared)


def _script_exit_7(b: Blast) -> None:
    b.lab.declare(A, script="exit 7")


def _site_path_becomes_directory(b: Blast) -> None:
    """While A builds, a real directory appears where its site symlink is: the switch refuses."""
    link = b.disk().link
    b.lab.declare(A, script=f"rm -f -- {sh_quote(link)}\nmkdir -- {sh_quote(link)}")


def _reload_fails(b: Blast) -> None:
    b.lab.declare(A, reload="exit 5")


def _second_release(b: Blast) -> None:
    app_commit(b.app_a, "v1.1-a")
    b.lab.converge()
    assert len(b.disk().releases()) == 2, b.disk().releases()


def _old_release_undeletable(b: Blast) -> None:
    """The oldest release holds an immutable file: `rm -rf` of it (pruning, keep = 1) fails."""
    oldest = b.disk().releases()[0]
    b.lab.make_immutable(b.disk().release(oldest) / "public" / "index.php")


_TARPITS: list[Tarpit] = []  # alive for the module: a case's daemon mode probes it again


def _git_host_silent(b: Blast) -> None:
    """A's repository moves to a git host that accepts and never answers:
    every ls-remote of A's head waits for it, within its own bound (git_timeout)."""
    pit = Tarpit()
    _TARPITS.append(pit)
    b.lab.declare(A, repository=pit.url("http", "a.git"))


def _app_repository_gone(b: Blast) -> None:
    """A's app repository cannot be listed any more (its host gone): an outage of A's repository
    only, reported as A's, never as its siblings' or the server's."""
    b.app_a.rename(b.app_a.with_name("app-a-gone"))


def _script_once_fails(b: Blast) -> None:
    """A's run-once step (migrations) fails: A is deployed as a fleet of one, by the one executor."""
    b.lab.declare(A, script_once="echo 'SQLSTATE: no such table'; exit 4")


def _env_file_unopenable(b: Blast) -> None:
    """A's encrypted env file arrives in the declarations, and this reconciler has no key that
    opens it (no age_identity_file; the bytes are not even age): A's problem, read with its
    declaration, never its siblings' or the pass's."""
    (b.lab.decl / "sites.d" / f"{A}.env.age").write_bytes(b"age-encryption.org/v1\n-> junk\n\x00\xff" * 40)
    git(b.lab.decl, "add", "sites.d")
    git(b.lab.decl, "commit", "-qm", f"env of {A}")


CASES = [
    Case("declarations: env file cannot be opened", "declarations", _env_file_unopenable, ("env.age",),
         syncs=("Invalid",)),
    Case("probe: malformed manifest", "probe parse", _manifest_bomb, ("manifest", MANIFEST_NAME)),
    Case("probe: forged symlink target", "probe parse", _forged_symlink, ("link",), may_heal=True),
    # An unreadable owner is a lock being taken (mkdir, then the owner): A is locked until stale.
    Case("probe: malformed lock owner", "probe parse", _owner_bomb, ("owner", "lock"),
         syncs=("Unknown", "Failed", "Progressing")),
    Case("lock acquire: foreign fresh lock", "lock acquire", _foreign_lock, ("lock",),
         syncs=("Progressing", "Unknown", "Failed")),
    Case("lock release: lock dir immutable", "lock release", _lock_release_fails, ("lock",),
         syncs=("Unknown", "Failed", "Progressing"), degraded_ok=True, chattr=True),
    Case("provision: shared is a file", "provision", _shared_is_a_file, ("provision", "shared")),
    Case("clone: head commit object missing", "clone", lambda b: None, ("clone",),
         after_commit=_drop_commit_object),
    Case("shared links: shared/ immutable", "shared links", _shared_unwritable, ("shared", "link"), chattr=True),
    Case("script: exit 7", "script", _script_exit_7, ("script", "exit 7")),
    Case("probe: git host never answers", "probe heads", _git_host_silent, ("git host", "answer"),
         syncs=("Unknown",)),
    Case("probe: app repository gone", "probe heads", lambda b: None, ("cannot resolve",), syncs=("Unknown",),
         after_commit=_app_repository_gone),
    Case("run once: script_once fails", "run once", _script_once_fails, ("script_once", "exit 4")),
    Case("switch: site path became a dir", "switch", _site_path_becomes_directory,
         ("symlink", "directory")),
    Case("reload: command fails", "reload", _reload_fails, ("reload",), degraded_ok=True),
    Case("prune: old release undeletable", "prune", _old_release_undeletable, ("prune",), degraded_ok=True,
         a_fields={"keep": 1}, setup_more=_second_release, chattr=True),
]


def prepare(tmp: Path, sshd: SshServer, case: Case, interval: float = 2) -> Blast:
    lab = Lab.create(tmp, sshd, interval=interval)
    b = Blast(lab, lab.app("app-a"), lab.app("app"), lab.base("srv-1"), lab.base("srv-remote"))
    lab.add(A, app=b.app_a, base=b.srv1, **case.a_fields)
    lab.add(B, app=b.app, base=b.srv1)
    lab.add(C, app=b.app, base=b.srv_remote, server=lab.remote)
    lab.converge()
    if case.setup_more is not None:
        case.setup_more(b)
    b.before = {d: lab.disk(d).releases() for d in SIBLINGS}
    case.inject(b)
    b.head_a = app_commit(b.app_a, "v2-a")
    b.head = app_commit(b.app, "v2")
    if case.after_commit is not None:
        case.after_commit(b)
    return b


def a_problems(b: Blast, case: Case, views: dict[str, dict[str, Any]]) -> list[str]:
    if case.may_heal and not sibling_problems(b.lab, views, A, b.head_a):
        return []  # converged over the bad datum: Synced at its new head with a proper release link
    return site_problems(views, A, case.syncs, case.keywords, case.degraded_ok)


def a_outcome(views: dict[str, dict[str, Any]]) -> str:
    view = views.get(A)
    if view is None:
        return "not reported"
    message = " ".join(str(view.get("message") or "").split())
    return f"{view.get('sync')}/{view.get('health')}: {message[:70]}"


# -- the table --------------------------------------------------------------------------------------


@dataclass
class Row:
    cli: str = "-"
    daemon: str = "-"
    cli_a: str = "-"
    daemon_a: str = "-"
    findings: list[str] = field(default_factory=list)


TABLE: dict[str, Row] = {}


def render() -> str:
    headers = ["case", "CLI wrongly affected", "daemon wrongly affected", "A (CLI)", "A (daemon)", "other findings"]
    lines = [[name, r.cli, r.daemon, r.cli_a, r.daemon_a, "; ".join(r.findings)[:200] or "-"]
             for name, r in ((c.name, TABLE[c.name]) for c in CASES if c.name in TABLE)]
    widths = [max([len(h), *(len(line[i]) for line in lines)]) for i, h in enumerate(headers)]
    out = [" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
           "-|-".join("-" * w for w in widths)]
    out += [" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    counted = [int(v) for r in TABLE.values() for v in (r.cli, r.daemon) if v.isdigit()]
    out.append(f"\ncases: {len(lines)}   runs: {len(counted)}   sites wrongly affected in total: {sum(counted)}")
    return "\n".join(out)


@pytest.fixture(scope="module", autouse=True)
def _print_table() -> Iterator[None]:
    yield
    if not TABLE:
        return
    text = render()
    fd, name = tempfile.mkstemp(prefix="reconciler-blast-radius-", suffix=".txt")
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
    under_test = os.environ.get(UNDER_TEST) or "this checkout"
    print(f"\n=== blast-radius matrix (code under test: {under_test}) ===")
    print(text)
    print(f"(table written to {name})")


@pytest.fixture(name="blast_tmp")
def blast_tmp_fixture(tmp_path: Path) -> Iterator[list[Lab]]:
    labs: list[Lab] = []
    try:
        yield labs
    finally:
        for lab in labs:
            lab.close()


def _skip_without_chattr(case: Case, tmp: Path) -> None:
    if case.chattr and not chattr_available(tmp / "chattr-check"):
        pytest.skip("chattr +i is not available on this filesystem (the fault needs the immutable flag)")


# -- the two modes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cli_pass_contains_the_fault(case: Case, tmp_path: Path, sshd_session: SshServer,
                                     blast_tmp: list[Lab]) -> None:
    _skip_without_chattr(case, tmp_path)
    row = TABLE.setdefault(case.name, Row())
    row.cli = "setup failed"
    b = prepare(tmp_path / "w", sshd_session, case)
    blast_tmp.append(b.lab)

    run = b.lab.reconcile()
    views = b.lab.status()
    heads = {B: b.head, C: b.head}
    wrong = {d: sibling_problems(b.lab, views, d, heads[d], b.before[d]) for d in SIBLINGS}
    row.cli = str(sum(1 for p in wrong.values() if p))
    row.cli_a = a_outcome(views)
    all_synced = all(views.get(d, {}).get("sync") == "Synced" for d in (A, B, C))
    others = run_problems(run, 0 if all_synced else 1) + a_problems(b, case, views)
    row.findings += [f"CLI: {p}" for p in others]
    problems = [p for ps in wrong.values() for p in ps] + others
    assert not problems, (f"sites wrongly affected: {row.cli} (must be 0)\n" + "\n".join(problems)
                          + "\n--- \n" + run.describe())


@pytest.mark.daemon
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_daemon_contains_the_fault(case: Case, tmp_path: Path, sshd_session: SshServer,
                                   blast_tmp: list[Lab]) -> None:
    _skip_without_chattr(case, tmp_path)
    row = TABLE.setdefault(case.name, Row())
    row.daemon = "setup failed"
    b = prepare(tmp_path / "w", sshd_session, case, interval=DAEMON_INTERVAL)
    blast_tmp.append(b.lab)
    heads = {B: b.head, C: b.head}

    daemon = b.lab.start_daemon()
    last: dict[str, Any] = {"a_seen": None}
    misreported: dict[str, str] = {}  # a sibling seen Failed/Unknown/Invalid/Degraded on the way

    def evaluate() -> bool:
        views = b.lab.status()
        for d in SIBLINGS:
            view = views.get(d, {})
            if d not in misreported and (view.get("sync") in WRONG_SYNCS or view.get("health") == "Degraded"):
                misreported[d] = f"{d}: reported {view.get('sync')}/{view.get('health')}: {view.get('message')!r}"
        wrong = {d: sibling_problems(b.lab, views, d, heads[d], b.before[d]) for d in SIBLINGS}
        a = a_problems(b, case, views)
        if not a and last["a_seen"] is None:
            last["a_seen"] = a_outcome(views)
        last.update(views=views, wrong=wrong, a=a)
        return daemon.alive() and not any(wrong.values()) and last["a_seen"] is not None

    wait_until(evaluate, DAEMON_TIMEOUT, "B and C live at the new head, A's fault reported", step=1.0, fail=False)
    alive = daemon.alive()
    rc = daemon.stop()
    log = daemon.output()

    wrong: dict[str, list[str]] = last["wrong"]
    for d, seen in misreported.items():
        wrong[d] = [*wrong[d], f"{seen} (while the daemon ran)"]
    row.daemon = str(sum(1 for p in wrong.values() if p))
    row.daemon_a = last["a_seen"] or a_outcome(last["views"])
    others = [] if last["a_seen"] is not None else list(last["a"])
    if not alive:
        others.append(f"the daemon died (exit {daemon.proc.returncode})")
    elif rc != 0:
        others.append(f"the daemon did not stop cleanly on SIGTERM (exit {rc})")
    died = crash_lines(log, DAEMON_DEATH_MARKERS)
    if died:
        others.append(f"daemon log: {died[:2]}")
    row.findings += [f"daemon: {p}" for p in others]
    problems = [p for ps in wrong.values() for p in ps] + others
    assert not problems, (f"sites wrongly affected: {row.daemon} (must be 0)\n" + "\n".join(problems)
                          + "\n" + daemon.tail(40))

