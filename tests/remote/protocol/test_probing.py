"""The probe's writer (remote/protocol/probing.py): the command text it builds and what that
command, run by a real /bin/sh, finds on real directories and git repositories in tmp_path.

Its output is read back with remote/probe.py's reader (tests/remote/test_probe.py covers the
reader on its own). Base paths and repositories full of shell metacharacters prove that every
value is quoted: no `pwned` file may ever appear.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

from reconciler.core.facts import BranchHead, ProbeSite
from reconciler.core.layout import MANIFEST_NAME
from reconciler.core.manifest import Manifest
from reconciler.remote.probe import gather
from reconciler.remote.protocol import heads as git_heads
from reconciler.remote.protocol import probing, seam
from reconciler.remote.protocol.probing import parse_probe
from tests.support import app_commit, git, make_app_repo
from tests.support.probe_server import (
    DOMAIN,
    HEAD,
    MAIN,
    OLD,
    R_ADOPT,
    R_BARE,
    R_CORRUPT,
    R_EMPTY_MANIFEST,
    R_FAIL,
    R_FILE,
    R_LINK,
    R_NEWER,
    R_OK,
    R_UPD,
    SITE_NAMES,
    build_server,
    manifest,
    no_pwned,
    release,
    run_probe,
)

BASE_NAMES = [
    "srv",
    "a b;touch pwned",
    "$(touch pwned)",
    "`touch pwned`",
    "it's; touch pwned; '",
    'q"uote & touch pwned |',
    "star * and ~tilde",
    "new\\nline $HOME",
]


@pytest.fixture
def app(tmp_path: Path) -> Path:
    # a repository path with shell metacharacters but no whitespace (whitespace is refused by validation)
    return make_app_repo(tmp_path / "app;touch${IFS}pwned$(touch${IFS}pwned)")


# --------------------------------------------------------------------------- the command text


def test_the_probe_travels_on_stdin_and_ends_with_the_end_record() -> None:
    command = probing.probe([ProbeSite(DOMAIN, "/srv")], [("/r/a", MAIN)])
    assert command.text == seam.RUN_BUFFERED
    assert command.stdin is not None and command.stdin.endswith("exit 0\n")
    embedded = probing.probe_script([ProbeSite(DOMAIN, "/srv")], [])
    assert "exit 0" not in embedded.splitlines()  # the lock command embeds it and goes on
    assert embedded.rstrip("\n").endswith(f"printf '{probing.Tag.END}\\0'")


def test_heads_start_in_batches_each_given_its_bound_only_while_the_budget_lasts() -> None:
    heads = [(f"/r/{i:02}", MAIN) for i in range(2 * git_heads.HEADS_AT_ONCE + 1)]
    script = probing.probe_script([], heads, bounds=(7, 30))
    lines = script.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("probe_head ")]
    assert len(starts) == len(heads)
    assert "gt=7; gend=$(($(date +%s) + 30))" in lines
    checks = [i for i, line in enumerate(lines) if line == "[ $((gend - $(date +%s))) -ge 7 ] || gt=0"]
    # Before the 9th and the 17th head: the start of each later batch.
    assert checks == [starts[git_heads.HEADS_AT_ONCE] - 1, starts[2 * git_heads.HEADS_AT_ONCE] - 1]
    assert all(lines[i - 1] == "wait" for i in checks)


# --------------------------------------------------------------------------- sites on real directories



@pytest.mark.parametrize("base_name", BASE_NAMES)
def test_probe_round_trip_on_real_directories(tmp_path: Path, base_name: str) -> None:
    base = tmp_path / "server" / base_name
    expected = build_server(base)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    sites = [ProbeSite(name, str(base)) for name in SITE_NAMES]
    output = run_probe(probing.probe(sites, []), cwd)
    facts = parse_probe(output, sites, [])
    no_pwned(tmp_path, cwd)

    assert set(facts.sites) == set(SITE_NAMES)  # exactly the sites asked for (not other.example.com)
    assert facts.heads == {}

    shop = facts.sites[DOMAIN]
    assert shop.base_path == str(base)
    assert shop.path_kind == "symlink"
    assert shop.link_target == f"deployments/{DOMAIN}/{R_OK}"
    assert not shop.dangling
    assert shop.provisioned and shop.shared
    assert shop.lock is None
    assert shop.active_release == R_OK
    assert set(shop.releases) == {R_OK, R_NEWER, R_FAIL, R_UPD, R_CORRUPT, R_EMPTY_MANIFEST, R_BARE, R_ADOPT}
    assert sorted(shop.not_dirs) == sorted([R_FILE, R_LINK])
    assert [r.name for r in shop.ordered()] == [
        R_ADOPT, R_BARE, R_CORRUPT, R_EMPTY_MANIFEST, R_FAIL, R_OK, R_NEWER, R_UPD,
    ]

    assert shop.problem is None  # a corrupt manifest is a corrupt release, not a site problem
    r = shop.releases
    ok = expected["ok"]
    assert isinstance(ok, Manifest)
    # Full round trip; the message's newline comes back escaped (server text reaches terminals).
    assert r[R_OK].manifest == dataclasses.replace(ok, message=ok.message.replace("\n", "\\n"))
    assert r[R_OK].status == "success" and r[R_OK].commit == HEAD and not r[R_OK].corrupt
    assert r[R_NEWER].manifest == expected["newer"]
    assert r[R_FAIL].manifest == expected["failed"]
    assert r[R_FAIL].status == "failed"
    assert r[R_UPD].status == "updating"
    assert r[R_CORRUPT].corrupt and r[R_CORRUPT].manifest is None and r[R_CORRUPT].status == "unknown"
    assert r[R_EMPTY_MANIFEST].corrupt and r[R_EMPTY_MANIFEST].status == "unknown"
    assert r[R_BARE].manifest is None and r[R_BARE].head is None and not r[R_BARE].corrupt
    assert r[R_BARE].status == "unknown"
    assert r[R_ADOPT].manifest is None
    assert r[R_ADOPT].head == expected["adopted_head"]
    assert r[R_ADOPT].commit == expected["adopted_head"]
    assert r[R_ADOPT].status == "success"

    dangling = facts.sites["dangling.example.com"]
    assert dangling.path_kind == "symlink"
    assert dangling.dangling
    assert dangling.link_target == "deployments/dangling.example.com/01012025-000000"
    assert dangling.active_release is None
    assert not dangling.provisioned and dangling.releases == {}

    directory = facts.sites["dir.example.com"]
    assert directory.path_kind == "dir" and directory.link_target is None and directory.active_release is None

    file = facts.sites["file.example.com"]
    assert file.path_kind == "file" and file.link_target is None

    new = facts.sites["new.example.com"]
    assert new.path_kind == "missing" and not new.provisioned and not new.shared and new.releases == {}
    assert new.link_target is None and new.active_release is None

    locked = facts.sites["locked.example.com"]
    assert locked.provisioned and not locked.shared
    assert locked.lock == "host-1 4242 token-xyz"

    foreign = facts.sites["foreign.example.com"]
    assert foreign.path_kind == "symlink" and foreign.dangling
    assert foreign.link_target == "/somewhere/else/entirely"
    assert foreign.active_release is None


def test_probe_absolute_link_target(tmp_path: Path) -> None:
    base = tmp_path / "srv"
    deployments = base / "deployments" / DOMAIN
    release(deployments, R_OK, manifest(HEAD, "success"))
    os.symlink(str(deployments / R_OK), base / DOMAIN)
    sites = [ProbeSite(DOMAIN, str(base))]
    facts = parse_probe(run_probe(probing.probe(sites, []), tmp_path), sites, [])
    site = facts.sites[DOMAIN]
    assert site.link_target == str(deployments / R_OK)
    assert site.active_release == R_OK
    assert site.provisioned and not site.shared


def test_probe_link_to_a_release_shaped_file_is_not_active(tmp_path: Path) -> None:
    base = tmp_path / "srv"
    deployments = base / "deployments" / DOMAIN
    deployments.mkdir(parents=True)
    (deployments / R_FILE).write_text("x\n")
    os.symlink(f"deployments/{DOMAIN}/{R_FILE}", base / DOMAIN)
    sites = [ProbeSite(DOMAIN, str(base))]
    facts = parse_probe(run_probe(probing.probe(sites, []), tmp_path), sites, [])
    site = facts.sites[DOMAIN]
    assert not site.dangling  # it resolves, to a file
    assert site.not_dirs == [R_FILE]
    assert site.releases == {}
    assert site.active_release is None


def test_probe_sites_on_different_base_paths(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two words"
    release(one / "deployments" / "a.example.com", R_OK, manifest(HEAD, "success"))
    release(two / "deployments" / "b.example.com", R_NEWER, manifest(OLD, "failed"))
    sites = [ProbeSite("a.example.com", str(one)), ProbeSite("b.example.com", str(two))]
    facts = parse_probe(run_probe(probing.probe(sites, []), tmp_path), sites, [])
    assert set(facts.sites["a.example.com"].releases) == {R_OK}
    assert set(facts.sites["b.example.com"].releases) == {R_NEWER}
    assert facts.sites["b.example.com"].releases[R_NEWER].status == "failed"


def test_probe_of_an_empty_machine(tmp_path: Path) -> None:
    sites = [ProbeSite(DOMAIN, str(tmp_path / "does" / "not" / "exist"))]
    facts = parse_probe(run_probe(probing.probe(sites, []), tmp_path), sites, [])
    site = facts.sites[DOMAIN]
    assert (site.path_kind, site.provisioned, site.releases, site.not_dirs) == ("missing", False, {}, [])


def test_heads_resolved_with_git_ls_remote(tmp_path: Path, app: Path) -> None:
    main_sha = git(app, "rev-parse", "HEAD")
    git(app, "checkout", "-q", "-b", "feature/x")
    feature_sha = app_commit(app, "feature")
    git(app, "checkout", "-q", "main")
    missing_repo = str(tmp_path / "no-such-repo")
    heads = [(str(app), MAIN), (str(app), "refs/heads/feature/x"), (str(app), "refs/heads/nope"),
             (missing_repo, MAIN), (str(app), MAIN)]  # duplicates are probed once
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    command = probing.probe([], heads)
    assert command.stdin is not None
    assert len([line for line in command.stdin.splitlines() if line.startswith("probe_head ")]) == 4  # duplicate merged
    facts = parse_probe(run_probe(command, cwd), [], heads)
    no_pwned(tmp_path)
    assert feature_sha != main_sha
    assert facts.heads[(str(app), MAIN)] == BranchHead(main_sha)
    assert facts.heads[(str(app), "refs/heads/feature/x")] == BranchHead(feature_sha)
    missing_branch = facts.heads[(str(app), "refs/heads/nope")]
    assert missing_branch.sha is None and missing_branch.error and "nope" in missing_branch.error
    missing = facts.heads[(missing_repo, MAIN)]
    assert missing.sha is None and missing.error
    assert set(facts.heads) == {(str(app), MAIN), (str(app), "refs/heads/feature/x"), (str(app), "refs/heads/nope"),
                                (missing_repo, MAIN)}


def test_head_is_the_exact_branch_not_a_suffix_match(tmp_path: Path, app: Path) -> None:
    # `git ls-remote <repo> refs/heads/main` also lists refs/heads/zzz/refs/heads/main (tail match).
    main_sha = git(app, "rev-parse", "HEAD")
    git(app, "checkout", "-q", "-b", "zzz/refs/heads/main")
    decoy_sha = app_commit(app, "decoy")
    git(app, "checkout", "-q", "main")
    assert decoy_sha != main_sha
    heads = [(str(app), MAIN)]
    facts = parse_probe(run_probe(probing.probe([], heads), tmp_path), [], heads)
    assert facts.heads[(str(app), MAIN)] == BranchHead(main_sha)


def test_heads_follow_new_commits(tmp_path: Path, app: Path) -> None:
    heads = [(str(app), MAIN)]
    first = parse_probe(run_probe(probing.probe([], heads), tmp_path), [], heads).heads[heads[0]]
    second_sha = app_commit(app, "v2")
    second = parse_probe(run_probe(probing.probe([], heads), tmp_path), [], heads).heads[heads[0]]
    assert first.sha is not None and second == BranchHead(second_sha) and first.sha != second_sha


def test_heads_of_a_bare_repository(tmp_path: Path, app: Path) -> None:
    bare = tmp_path / "app.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(app), str(bare)], check=True)
    heads = [(str(bare), MAIN), (f"file://{bare}", MAIN)]
    facts = parse_probe(run_probe(probing.probe([], heads), tmp_path), [], heads)
    sha = git(app, "rev-parse", "HEAD")
    assert facts.heads[(str(bare), MAIN)] == BranchHead(sha)
    assert facts.heads[(f"file://{bare}", MAIN)] == BranchHead(sha)


def test_many_heads_parallel(tmp_path: Path) -> None:
    # more than ten heads: the per-head output files sort as 0, 1, 10, 11, 2 ... and must still match up
    repos = []
    for index in range(12):
        repo = tmp_path / f"repo{index}"
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        (repo / "f").write_text(str(index))
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", str(index))
        repos.append((str(repo), git(repo, "rev-parse", "HEAD")))
    heads = [(path, MAIN) for path, _ in repos]
    facts = parse_probe(run_probe(probing.probe([], heads), tmp_path), [], heads)
    assert {key: head.sha for key, head in facts.heads.items()} == {(path, MAIN): sha for path, sha in repos}


def test_tag_heads_are_the_commits_the_tags_name(tmp_path: Path, app: Path) -> None:
    """An annotated tag is resolved to its commit (the peeled `^{}` line), a lightweight tag to
    the commit it points at; a tag of a tag peels all the way. Decoys that ls-remote's suffix
    match also lists (zzz/refs/tags/v1, a branch called v1) are never taken."""
    first = git(app, "rev-parse", "HEAD")
    git(app, "tag", "-a", "-m", "annotated", "v1")
    git(app, "tag", "light")
    second = app_commit(app, "second")
    git(app, "tag", "-a", "-m", "a tag of a tag", "outer", "v1")
    git(app, "tag", "-a", "-m", "decoy", "zzz/refs/tags/v1", second)
    git(app, "tag", "zzz/refs/tags/light", second)
    git(app, "branch", "v1", second)
    git(app, "branch", "light", second)
    assert git(app, "rev-parse", "refs/tags/v1") != first, "an annotated tag is an object of its own"
    heads = [(str(app), "refs/tags/v1"), (str(app), "refs/tags/light"), (str(app), "refs/tags/outer"),
             (str(app), "refs/tags/nope"), (str(app), "refs/heads/v1")]
    facts = parse_probe(run_probe(probing.probe([], heads), tmp_path), [], heads)
    no_pwned(tmp_path)
    assert facts.heads[(str(app), "refs/tags/v1")] == BranchHead(first)
    assert facts.heads[(str(app), "refs/tags/light")] == BranchHead(first)
    assert facts.heads[(str(app), "refs/tags/outer")] == BranchHead(first)
    assert facts.heads[(str(app), "refs/heads/v1")] == BranchHead(second)
    missing = facts.heads[(str(app), "refs/tags/nope")]
    assert missing.sha is None and missing.error == f"tag 'nope' not found in {app}"


def test_manifests_with_nul_bytes_newlines_and_bad_utf8_stay_in_their_release(tmp_path: Path) -> None:
    """The real shell: `read` drops NUL bytes, so no manifest can end its record early."""
    base = tmp_path / "srv"
    deployments = base / "deployments" / DOMAIN
    good = manifest(HEAD, "success")
    names = ["01012021-000000", "02012021-000000", "03012021-000000", "04012021-000000"]
    for name in names:
        release(deployments, name, None)
    forged = f"@release 05012021-000000\0@manifest {good.to_json()}\0@site a.example.com\0@end\0"
    (deployments / names[0] / MANIFEST_NAME).write_bytes(b"{\0}" + forged.encode())
    (deployments / names[1] / MANIFEST_NAME).write_bytes(b"\xff\xfe" + good.to_json().encode())
    (deployments / names[2] / MANIFEST_NAME).write_bytes(good.to_json().encode() + b"\n\0@end\0")
    (deployments / names[3] / MANIFEST_NAME).write_bytes(b"\0" + good.to_json().encode())
    sites = [ProbeSite(DOMAIN, str(base)), ProbeSite("a.example.com", str(base))]
    facts = parse_probe(run_probe(probing.probe(sites, []), tmp_path), sites, [])
    site = facts.sites[DOMAIN]
    assert set(site.releases) == set(names)
    assert site.releases[names[0]].corrupt and site.releases[names[1]].corrupt
    assert site.releases[names[2]].manifest == good  # the first line only
    assert site.releases[names[3]].manifest == good  # the NUL byte is dropped by `read`
    assert facts.sites["a.example.com"].path_kind == "missing"


def test_the_framing_for_shells_that_keep_nul_bytes_reads_the_same(tmp_path: Path, app: Path) -> None:
    """zsh keeps NUL bytes in variables; the probe then strips them with tr. Forced here on dash."""
    base = tmp_path / "srv"
    expected = build_server(base)
    deployments = base / "deployments" / DOMAIN
    (deployments / R_CORRUPT / MANIFEST_NAME).write_bytes(b'{"commit"\0: "abc", "status": ')
    sites = [ProbeSite(name, str(base)) for name in SITE_NAMES]
    heads = [(str(app), MAIN), (str(app), "refs/heads/nope")]
    command = probing.probe(sites, heads)
    check = 'if [ "${#nul}" -eq 2 ]; then'
    assert command.stdin is not None and command.stdin.count(check) == 1
    normal = parse_probe(run_probe(command, tmp_path), sites, heads)
    forced = dataclasses.replace(command, stdin=command.stdin.replace(check, "if false; then"))
    stripped = parse_probe(run_probe(forced, tmp_path), sites, heads)
    assert stripped == normal
    assert normal.sites[DOMAIN].releases[R_ADOPT].head == expected["adopted_head"]
    assert normal.heads[(str(app), MAIN)] == BranchHead(git(app, "rev-parse", "HEAD"))


def test_batched_link_reads_give_the_same_facts_as_one_readlink_per_site(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """GNU find reads every site link of a probe in one process; a server without it
    (BusyBox: no -printf) reads one link per site. Both must give the same facts, for ordinary and
    hostile link targets alike."""
    from reconciler.remote.transport.local import LocalTransport

    base = tmp_path / "srv"
    base.mkdir()
    targets = {"a.example.com": "deployments/a.example.com/01012025-000000", "b.example.com": "x\ny",
               "c.example.com": "trailing\n", "d.example.com": "../../etc", "h.example.com": "@link x\0"[:-1],
               "i.example.com": " leading space"}
    for domain, target in targets.items():
        os.symlink(target, base / domain)
    (base / "deployments" / "a.example.com" / "01012025-000000").mkdir(parents=True)
    (base / "e.example.com").mkdir()
    (base / "f.example.com").write_text("x")
    domains = [*targets, "e.example.com", "f.example.com", "g.example.com"]
    sites = [ProbeSite(domain, str(base)) for domain in domains]

    batched = asyncio.run(gather(LocalTransport(), sites, [], timeout=30))
    assert batched.sites["a.example.com"].active_release == "01012025-000000"
    assert batched.sites["b.example.com"].path_kind == "symlink"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "find").write_text("#!/bin/sh\necho 'find: unrecognized: -printf' >&2\nexit 1\n")
    (bindir / "find").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    one_by_one = asyncio.run(gather(LocalTransport(), sites, [], timeout=30))
    # `$(readlink)` drops the newlines a target ends with (remote/probe.py); find reads it exactly,
    # and a target with a line break is no plain path of ours.
    assert batched.sites["c.example.com"].link_target is None
    assert one_by_one.sites["c.example.com"].link_target == "trailing"
    for domain in domains:
        if domain != "c.example.com":
            assert batched.sites[domain] == one_by_one.sites[domain], domain



def test_the_probe_reports_the_digest_of_shared_env_for_sites_with_an_env_file(tmp_path: Path) -> None:
    """Only a site with an env file costs the digest; "-" when the file is missing."""
    import hashlib

    from reconciler.remote.protocol import probing, seam
    shared = tmp_path / "deployments" / "a.example.com" / "shared"
    shared.mkdir(parents=True)
    (shared / ".env").write_text("A=1\n")
    sites = [ProbeSite("a.example.com", str(tmp_path), (), True), ProbeSite("b.example.com", str(tmp_path), (), True),
             ProbeSite("c.example.com", str(tmp_path))]
    command = probing.probe(sites, [])
    assert command.stdin is not None
    out = subprocess.run(seam.local_argv(command.text), input=command.stdin.encode(), capture_output=True,
                         check=True).stdout
    facts = probing.parse_probe(out, sites, [])
    assert facts.sites["a.example.com"].env_digest == hashlib.sha256(b"A=1\n").hexdigest()
    assert facts.sites["b.example.com"].env_digest is None and facts.sites["b.example.com"].problem is None
    assert b"@env" not in out.split(b"@site c.example.com")[1]
    assert "probe_env 'c.example.com'" not in command.stdin and "probe_env c.example.com" not in command.stdin
