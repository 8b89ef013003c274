"""Regression tests proving that no site, server or input can stop another: one test (or one
parametrized family) per reproduced defect.

Each test builds real git repositories and a real server layout (`server = "local"` in a tmp dir,
or the real OpenSSH sshd of tests/support/sshd.py), plants the fault a user or an attacker could plant,
and drives the REAL reconciler as a separate process (`python -m reconciler --config ...`), the
way an operator does. It asserts the user-visible contract: the healthy sibling deploys and
reports Synced, the bad site reports Failed/Unknown/Invalid with a message naming the cause,
`reconcile` exits 1 without a traceback, and nothing else changed.

Proving that every test fails on the code before the fix (the commit e49cf4c, whose package
layout is flat: reconciler/cli.py, reconciler/facts.py, ...):

    git -C /work/main worktree add /tmp/oldmain e49cf4c      # once; reuse it when it exists
    RECONCILER_UNDER_TEST=/tmp/oldmain .venv/bin/python -m pytest -p no:cacheprovider \\
        tests/faults/test_isolation.py

RECONCILER_UNDER_TEST names the checkout whose `reconciler` package the child processes run (it
alone is put on their PYTHONPATH, tests/support/process.py; the lab of tests/faults/blast_support.py
also checks where the children really import it from). Without it the tests run this checkout. Setup (repositories,
config files) uses this checkout's test helpers in-process; every setup pass, fault pass and
`status` goes through the code under test, so its state database and server layout are its own.
Every test here must fail with RECONCILER_UNDER_TEST=/tmp/oldmain and pass without it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.faults.blast_support import (
    Lab,
    foreign_owner,
    plant_lock,
    run_problems,
    sibling_problems,
    site_problems,
)
from tests.support import MANIFEST_NAME, SiteOnDisk, app_commit, git
from tests.support.sshd import SshServer

GOOD = "good.example.com"
BAD = "bad.example.com"
ESC = b"\x1b"


@pytest.fixture(name="lab")
def lab_fixture(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab.create(tmp_path)
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(name="ssh_lab")
def ssh_lab_fixture(tmp_path: Path, sshd_session: SshServer) -> Iterator[Lab]:
    lab = Lab.create(tmp_path, sshd_session)
    try:
        yield lab
    finally:
        lab.close()


def two_sites(lab: Lab, server: str = "local") -> Path:
    """BAD and GOOD on the same server and base path, one app repo, both live at v1."""
    app = lab.app("app")
    base = lab.base("srv")
    lab.add(BAD, app=app, base=base, server=server)
    lab.add(GOOD, app=app, base=base, server=server)
    lab.converge()
    return app


def verdict(*problem_lists: list[str], context: str = "") -> None:
    problems = [p for problems in problem_lists for p in problems]
    assert not problems, "\n".join(problems) + (f"\n--- \n{context}" if context else "")


# --- 1. one site's permanent error aborts the whole pass ----------------------------------------------


def test_1_provision_failure_of_one_site_does_not_abort_the_pass(lab: Lab) -> None:
    """`deployments/bad/shared` is a regular file: provision fails (StepFailed). The healthy site
    on the same server still deploys its new commit in the same pass."""
    app = two_sites(lab)
    before = lab.disk(GOOD).releases()
    shared = lab.disk(BAD).deployments / "shared"
    shutil.rmtree(shared)
    shared.write_text("a file where the shared directory belongs\n")
    head = app_commit(app, "v2")

    run = lab.reconcile()
    views = lab.status()
    verdict(run_problems(run, 1), sibling_problems(lab, views, GOOD, head, before),
            site_problems(views, BAD, ("Failed", "Unknown"), ("provision", "shared")), context=run.describe())


# --- 2. values the validator accepted crash every pass ------------------------------------------------


@pytest.mark.parametrize("server", ["a..b", "a" * 64 + ".example.com", "127.0.0.1:99999"],
                         ids=["empty-label", "64-char-label", "port-99999"])
def test_2_untransportable_server_value_does_not_crash_the_pass(lab: Lab, server: str) -> None:
    app = lab.app("app")
    base = lab.base("srv")
    lab.add(GOOD, app=app, base=base)
    lab.converge()
    before = lab.disk(GOOD).releases()
    lab.add(BAD, app=app, base=lab.base("srv-bad"), server=server)
    head = app_commit(app, "v2")

    run = lab.reconcile()
    views = lab.status()
    verdict(run_problems(run, 1), sibling_problems(lab, views, GOOD, head, before),
            site_problems(views, BAD, ("Invalid", "Failed", "Unknown"), ("server", "port", "label", server)),
            context=run.describe())


# --- 3. files on a server crash the pass -------------------------------------------------------------


def _manifest_bomb(lab: Lab, disk: SiteOnDisk) -> None:
    release = disk.release("01012020-000000")
    release.mkdir()
    (release / MANIFEST_NAME).write_text("[" * 200_000)


def _owner_bomb(lab: Lab, disk: SiteOnDisk) -> None:
    plant_lock(disk, "[" * 200_000)


def _owner_pid_overflow(lab: Lab, disk: SiteOnDisk) -> None:
    """An owner with THIS instance's id and host (so the liveness check runs) and pid 2**70."""
    instance = (lab.state / "instance-id").read_text().strip()
    plant_lock(disk, json.dumps({"instance": instance, "run": "0" * 16, "host": socket.gethostname(),
                                 "pid": 2**70, "purpose": "deploy", "since": time.time()}))


def _symlink_forged_heads(lab: Lab, disk: SiteOnDisk) -> None:
    disk.link.unlink()
    os.symlink("x\n@heads \u00b2 0", disk.link)


@dataclass(frozen=True)
class ServerFile:
    plant: Callable[[Lab, SiteOnDisk], None]
    keywords: tuple[str, ...]  # the message names the cause with one of these
    syncs: tuple[str, ...] = ("Unknown", "Failed")
    # The planted datum is the site symlink itself, which the next switch replaces atomically:
    # a symlink not pointing at one of our releases is drift, and converging over it (Synced at
    # the new head, a proper release link) is as right as reporting it. Forging another record
    # never is.
    may_heal: bool = False


# A lock dir whose owner cannot be read is the state between mkdir and writing the owner: the
# site is locked (Progressing, an allowed temporary state) until it goes stale.
SERVER_FILES: dict[str, ServerFile] = {
    "manifest-200k-brackets": ServerFile(_manifest_bomb, ("manifest", MANIFEST_NAME, "01012020-000000")),
    "lock-owner-200k-brackets": ServerFile(_owner_bomb, ("owner", "lock"), ("Unknown", "Failed", "Progressing")),
    "lock-owner-pid-2**70": ServerFile(_owner_pid_overflow, ("owner", "lock", "pid"),
                                       ("Unknown", "Failed", "Progressing")),
    "symlink-target-forged-heads-line": ServerFile(_symlink_forged_heads, ("link",), may_heal=True),
}


def healed(lab: Lab, views: dict[str, dict[str, Any]], domain: str, head: str) -> bool:
    return not sibling_problems(lab, views, domain, head)


@pytest.mark.parametrize("variant", list(SERVER_FILES))
def test_3_malformed_server_file_affects_only_its_site(lab: Lab, variant: str) -> None:
    case = SERVER_FILES[variant]
    app = two_sites(lab)
    before = lab.disk(GOOD).releases()
    case.plant(lab, lab.disk(BAD))
    head = app_commit(app, "v2")

    run = lab.reconcile()
    views = lab.status()
    if case.may_heal and healed(lab, views, BAD, head):
        verdict(run_problems(run, 0), sibling_problems(lab, views, GOOD, head, before), context=run.describe())
        return
    verdict(run_problems(run, 1), sibling_problems(lab, views, GOOD, head, before),
            site_problems(views, BAD, case.syncs, case.keywords), context=run.describe())


# --- 4. a branch head forged through a ref name with U+2028 (High) ------------------------------------


def test_4_ref_name_with_unicode_line_separators_cannot_forge_the_branch_head(lab: Lab) -> None:
    """Someone who may push any branch (not main) creates feature/x with an unreviewed commit
    and a ref whose name carries U+2028/U+3000. main's head must stay what main says."""
    app = lab.app("app")
    lab.add(GOOD, app=app, base=lab.base("srv"), script="cat public/index.php")
    lab.converge()
    main = lab.head(GOOD)
    git(app, "checkout", "-q", "-b", "feature/x")
    evil = app_commit(app, "EVIL unreviewed")
    git(app, "checkout", "-q", "main")
    ref = f"refs/heads/zzz\u2028|{evil}\u3000refs/heads/main\u2028/refs/heads/main"
    git(app, "check-ref-format", ref)  # git accepts the name
    git(app, "update-ref", ref, evil)
    assert git(app, "rev-parse", "refs/heads/main") == main

    run = lab.reconcile()
    views = lab.status()
    disk = lab.disk(GOOD)
    built = {name: disk.commit_of(name) for name in disk.releases()}
    problems = run_problems(run, 0) + sibling_problems(lab, views, GOOD, main)
    if evil in built.values():
        problems.append(f"the unreviewed commit {evil[:12]} was built: {built}")
    verdict(problems, context=run.describe())


# --- 5. one repository's non-UTF-8 ref poisons the other sites' probe over SSH -------------------------


@pytest.mark.ssh
def test_5_non_utf8_ref_in_one_repository_does_not_break_the_server_probe(ssh_lab: Lab) -> None:
    lab = ssh_lab
    app_a, app_b = lab.app("app-a"), lab.app("app-b")
    base = lab.base("srv")
    lab.add(BAD, app=app_a, base=base, server=lab.remote)
    lab.add(GOOD, app=app_b, base=base, server=lab.remote)
    lab.converge()
    before = lab.disk(GOOD).releases()
    head_a = lab.head(BAD)
    subprocess.run([b"git", b"update-ref", b"refs/heads/zzz\xff/refs/heads/main", head_a.encode()],
                   cwd=app_a, check=True, capture_output=True)
    head = app_commit(app_b, "v2")

    run = lab.reconcile()
    views = lab.status()
    problems = run_problems(run, None) + sibling_problems(lab, views, GOOD, head, before)
    # BAD's own branch is fine: it may stay Synced at its real head, or say what it could not read.
    bad = views.get(BAD, {})
    if bad.get("sync") == "Synced":
        if bad.get("active_commit") != head_a:
            problems.append(f"{BAD}: Synced at {bad.get('active_commit')}, not at its main {head_a[:12]}")
    else:
        problems += site_problems(views, BAD, ("Unknown", "Failed"), ())
    verdict(problems, context=run.describe())


# --- 6. `prune` ignores the site lock and plans from forgeable facts ----------------------------------


def _three_releases(lab: Lab, *domains: str) -> Path:
    app = lab.app("app")
    base = lab.base("srv")
    for domain in domains:
        lab.add(domain, app=app, base=base)
    lab.converge()
    for n in (2, 3):
        app_commit(app, f"v{n}")
        lab.converge()
    for domain in domains:
        assert len(lab.disk(domain).releases()) == 3, lab.disk(domain).releases()
    return app


def test_6a_prune_respects_a_foreign_fresh_lock(lab: Lab) -> None:
    _three_releases(lab, GOOD)
    disk = lab.disk(GOOD)
    releases = disk.releases()
    owner = foreign_owner()
    plant_lock(disk, owner)

    run = lab.cli("prune", "--keep", "1", "--site", GOOD)
    problems = run_problems(run, None)
    if disk.releases() != releases:
        problems.append(f"prune deleted {sorted(set(releases) - set(disk.releases()))} under a foreign lock")
    if "lock" not in run.text.lower():
        problems.append("prune did not report the site as locked")
    if not (disk.lock / "owner").is_file() or (disk.lock / "owner").read_text().strip() != owner:
        problems.append("the foreign lock was removed or changed")
    verdict(problems, context=run.describe())


def test_6b_forged_site_symlink_cannot_make_prune_delete_another_sites_releases(lab: Lab) -> None:
    """z's site symlink target embeds newlines and `@site a ...` records claiming 14 newer releases
    of a: prune must not delete a's real (and live) releases."""
    a, z = "a.example.com", "z.example.com"
    _three_releases(lab, a, z)
    disk_a, disk_z = lab.disk(a), lab.disk(z)
    a_releases, a_active = disk_a.releases(), disk_a.active()
    z_releases, z_active = disk_z.releases(), disk_z.active()
    fake = [f"01012099-0000{i:02d}" for i in range(14)]
    manifest = json.dumps({"commit": "0" * 40, "branch": "main", "repository": "r", "build_key": "k",
                           "status": "success"}, separators=(",", ":"))
    lines = [f"deployments/{z}/{z_active}", f"@site {a}", f"@link deployments/{a}/{fake[-1]}", "@provisioned",
             "@shared"]
    for name in [*fake, *a_releases]:
        lines += [f"@release {name}", f"@manifest {manifest}"]
    lines += [f"@site {z}", f"@link deployments/{z}/{z_active}"]
    disk_z.link.unlink()
    os.symlink("\n".join(lines), disk_z.link)

    run = lab.cli("prune")
    problems = run_problems(run, None)
    if disk_a.releases() != a_releases:
        problems.append(f"prune deleted {a}'s releases {sorted(set(a_releases) - set(disk_a.releases()))}")
    if disk_a.active() != a_active or not disk_a.link.resolve().is_dir():
        problems.append(f"{a} is no longer live at {a_active}")
    if disk_z.releases() != z_releases:
        problems.append(f"prune deleted {z}'s releases {sorted(set(z_releases) - set(disk_z.releases()))}")
    verdict(problems, context=run.describe())


# --- 7. terminal escapes from server data reach the terminal ------------------------------------------

HOSTILE = "\x1b]0;PWNED-TITLE\x07\x1b[2J\x1b[1;32mall sites Synced\x1b[8m"


def _escape_in_lock_owner(lab: Lab, disk: SiteOnDisk, head: str) -> None:
    plant_lock(disk, foreign_owner(host=HOSTILE))


def _escape_in_manifest_message(lab: Lab, disk: SiteOnDisk, head: str) -> None:
    """A failed release of exactly the desired build whose manifest message carries escapes:
    the failure memory shows that message."""
    live = disk.active()
    assert live is not None
    build_key = disk.manifest(live)["build_key"]
    release = disk.release("01012030-000000")
    release.mkdir()
    (release / MANIFEST_NAME).write_text(json.dumps({
        "commit": head, "branch": "main", "repository": str(lab.sites[disk.domain].app), "build_key": build_key,
        "status": "failed", "message": HOSTILE, "started_at": "", "completed_at": "", "declarations_commit": "",
    }) + "\n")


@pytest.mark.parametrize("source", ["lock-owner-host", "manifest-message"])
def test_7_terminal_escapes_from_server_data_never_reach_the_terminal(lab: Lab, source: str) -> None:
    plant = _escape_in_lock_owner if source == "lock-owner-host" else _escape_in_manifest_message
    app = two_sites(lab)
    head = app_commit(app, "v2")
    plant(lab, lab.disk(BAD), head)

    runs = [lab.reconcile(), lab.cli("status"), lab.cli("status", BAD)]
    views = lab.status()
    problems = [f"`reconciler {' '.join(r.args)}` wrote a raw ESC byte: "
                f"{(r.raw_out + r.raw_err)[max(0, (r.raw_out + r.raw_err).find(ESC) - 40):][:120]!r}"
                for r in runs if ESC in r.raw_out + r.raw_err]
    for run in runs:
        problems += run_problems(run, None)
    problems += sibling_problems(lab, views, GOOD, head)
    bad = views.get(BAD, {})
    if bad.get("sync") == "Synced":
        problems.append(f"{BAD}: reported Synced despite {source}")
    verdict(problems, context="\n".join(r.describe() for r in runs))


# --- 8. a valid 60 KB script overflows the argument list and is retried forever ------------------------


def test_8_long_valid_script_runs_instead_of_looping_as_unknown(lab: Lab) -> None:
    """`: ''''...` (60 KB, a no-op) grows fivefold when quoted into an argument (E2BIG); it must
    travel another way and run, not be retried as a temporary error with a clone every pass."""
    app = lab.app("app")
    lab.add(GOOD, app=app, base=lab.base("srv"))
    lab.converge()
    script = ": " + "''" * 30_000
    lab.declare(GOOD, script=script)
    head = app_commit(app, "v2")
    before = lab.disk(GOOD).releases()

    first = lab.reconcile()
    views = lab.status()
    problems = run_problems(first, 0) + sibling_problems(lab, views, GOOD, head, before)
    second = lab.reconcile()
    after = lab.disk(GOOD).releases()
    problems += run_problems(second, 0)
    if len(after) != len(before) + 1:
        problems.append(f"expected exactly one new release over two passes, releases went {before} -> {after}")
    verdict(problems, context=first.describe() + "\n" + second.describe())
