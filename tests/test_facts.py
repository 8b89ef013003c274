"""probe_command / parse_probe against REAL directories and git repositories on this machine.

A fake server layout is built in tmp_path, the probe runs through `/bin/sh -c` (and through the
local transport), and the parsed facts are checked. Base paths and repositories full of shell
metacharacters prove that every value is quoted: no `pwned` file may ever appear.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from reconciler.core.facts import BranchHead, ProbeSite, ServerFacts
from reconciler.core.layout import MANIFEST_NAME
from reconciler.core.manifest import Manifest
from reconciler.remote.probe import gather, parse_probe, probe_command
from reconciler.remote.transport.local import LocalTransport
from tests.builders import app_commit, git, make_app_repo

DOMAIN = "shop.example.com"
HEAD = "a" * 40
OLD = "b" * 40
R_OK = "31072025-143022"
R_NEWER = "01082025-091245"
R_FAIL = "15072025-100000"
R_UPD = "02082025-080000"
R_CORRUPT = "10072025-000000"
R_EMPTY_MANIFEST = "11072025-000000"
R_ADOPT = "01072025-120000"
R_BARE = "05072025-120000"  # a release dir with neither manifest nor git
R_FILE = "03082025-000000"  # release-shaped name that is a plain file
R_LINK = "04082025-000000"  # release-shaped name that is a symlink to a release
R_BADDATE = "31022025-101010"  # release-shaped dir with an impossible date

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


def manifest(commit: str, status: str, **extra: str) -> Manifest:
    return Manifest(commit=commit, branch="main", repository="/srv/git/shop.git", build_key="0123456789abcdef",
                    status=status, started_at="2025-07-31T14:30:22Z", completed_at="2025-07-31T14:31:00Z",
                    **extra)


def release(deployments: Path, name: str, data: Manifest | str | None) -> Path:
    path = deployments / name
    path.mkdir(parents=True)
    (path / "deployment.log").write_text("==> done\n")
    if isinstance(data, Manifest):
        (path / MANIFEST_NAME).write_text(data.to_json())
    elif isinstance(data, str):
        (path / MANIFEST_NAME).write_text(data)
    return path


def build_server(base: Path) -> dict[str, object]:
    """A server holding every kind of thing a probe can meet. Returns what the test must find."""
    base.mkdir(parents=True)
    deployments = base / "deployments" / DOMAIN
    (deployments / "shared" / "storage").mkdir(parents=True)
    ok = manifest(HEAD, "success", message="it's \"fine\"; $(touch pwned)\nsecond line",
                  declarations_commit="d" * 40)
    newer = manifest(OLD, "success")
    failed = manifest(OLD, "failed", message="deploy script failed (exit 3)")
    building = manifest(HEAD, "updating")
    release(deployments, R_OK, ok)
    release(deployments, R_NEWER, newer)
    release(deployments, R_FAIL, failed)
    release(deployments, R_UPD, building)
    release(deployments, R_CORRUPT, '{"commit": "abc", "status": ')
    release(deployments, R_EMPTY_MANIFEST, "")
    release(deployments, R_BARE, None)
    release(deployments, R_BADDATE, manifest(HEAD, "success"))
    adopted = release(deployments, R_ADOPT, None)
    git(adopted, "init", "-q", "-b", "main")
    (adopted / "index.php").write_text("<?php\n")
    git(adopted, "add", "-A")
    git(adopted, "commit", "-q", "-m", "adopted")
    adopted_head = git(adopted, "rev-parse", "HEAD")
    (deployments / "junk").mkdir()
    (deployments / "20250731-143022").mkdir()  # ISO order: the glob shape, but day 20 month 25
    (deployments / R_FILE).write_text("not a release\n")
    os.symlink(R_OK, deployments / R_LINK)
    (deployments / "notes.txt").write_text("x\n")
    os.symlink(f"deployments/{DOMAIN}/{R_OK}", base / DOMAIN)

    # other sites on the same server
    os.symlink("deployments/dangling.example.com/01012025-000000", base / "dangling.example.com")
    (base / "dir.example.com" / "public").mkdir(parents=True)
    (base / "file.example.com").write_text("<html>\n")
    locked = base / "deployments" / "locked.example.com"
    (locked / ".reconciler-lock").mkdir(parents=True)
    (locked / ".reconciler-lock" / "owner").write_text("host-1 4242 token-xyz\nsecond line is not read\n")
    os.symlink("/somewhere/else/entirely", base / "foreign.example.com")
    other = base / "deployments" / "other.example.com"
    release(other, R_OK, manifest(HEAD, "success"))
    os.symlink(f"deployments/other.example.com/{R_OK}", base / "other.example.com")
    return {"ok": ok, "newer": newer, "failed": failed, "building": building, "adopted_head": adopted_head}


SITE_NAMES = ["shop.example.com", "dangling.example.com", "dir.example.com", "file.example.com",
              "new.example.com", "locked.example.com", "foreign.example.com"]


def run_probe(command: str, cwd: Path) -> str:
    result = subprocess.run(["/bin/sh", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def no_pwned(*roots: Path) -> None:
    for root in roots:
        found = [str(p) for p in root.rglob("*pwned*") if p.name == "pwned"]
        assert found == [], f"a value was executed as code: {found}"


@pytest.mark.parametrize("base_name", BASE_NAMES)
def test_probe_round_trip_on_real_directories(tmp_path: Path, base_name: str) -> None:
    base = tmp_path / "server" / base_name
    expected = build_server(base)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    sites = [ProbeSite(name, str(base)) for name in SITE_NAMES]
    output = run_probe(probe_command(sites, []), cwd)
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

    r = shop.releases
    assert r[R_OK].manifest == expected["ok"]  # full round trip, message with quotes and a newline included
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
    facts = parse_probe(run_probe(probe_command(sites, []), tmp_path), sites, [])
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
    facts = parse_probe(run_probe(probe_command(sites, []), tmp_path), sites, [])
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
    facts = parse_probe(run_probe(probe_command(sites, []), tmp_path), sites, [])
    assert set(facts.sites["a.example.com"].releases) == {R_OK}
    assert set(facts.sites["b.example.com"].releases) == {R_NEWER}
    assert facts.sites["b.example.com"].releases[R_NEWER].status == "failed"


def test_probe_of_an_empty_machine(tmp_path: Path) -> None:
    sites = [ProbeSite(DOMAIN, str(tmp_path / "does" / "not" / "exist"))]
    facts = parse_probe(run_probe(probe_command(sites, []), tmp_path), sites, [])
    site = facts.sites[DOMAIN]
    assert (site.path_kind, site.provisioned, site.releases, site.not_dirs) == ("missing", False, {}, [])


# --------------------------------------------------------------------------- branch heads


@pytest.fixture
def app(tmp_path: Path) -> Path:
    # a repository path with shell metacharacters but no whitespace (whitespace is refused by validation)
    return make_app_repo(tmp_path / "app;touch${IFS}pwned$(touch${IFS}pwned)")


def test_heads_resolved_with_git_ls_remote(tmp_path: Path, app: Path) -> None:
    main_sha = git(app, "rev-parse", "HEAD")
    git(app, "checkout", "-q", "-b", "feature/x")
    feature_sha = app_commit(app, "feature")
    git(app, "checkout", "-q", "main")
    missing_repo = str(tmp_path / "no-such-repo")
    heads = [(str(app), "main"), (str(app), "feature/x"), (str(app), "nope"), (missing_repo, "main"),
             (str(app), "main")]  # duplicates are probed once
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    command = probe_command([], heads)
    assert len([line for line in command.splitlines() if line.startswith("probe_head ")]) == 4  # duplicate merged
    facts = parse_probe(run_probe(command, cwd), [], heads)
    no_pwned(tmp_path)
    assert feature_sha != main_sha
    assert facts.heads[(str(app), "main")] == BranchHead(main_sha)
    assert facts.heads[(str(app), "feature/x")] == BranchHead(feature_sha)
    missing_branch = facts.heads[(str(app), "nope")]
    assert missing_branch.sha is None and missing_branch.error and "nope" in missing_branch.error
    missing = facts.heads[(missing_repo, "main")]
    assert missing.sha is None and missing.error
    assert set(facts.heads) == {(str(app), "main"), (str(app), "feature/x"), (str(app), "nope"), (missing_repo, "main")}


def test_head_is_the_exact_branch_not_a_suffix_match(tmp_path: Path, app: Path) -> None:
    # `git ls-remote <repo> refs/heads/main` also lists refs/heads/zzz/refs/heads/main (tail match).
    main_sha = git(app, "rev-parse", "HEAD")
    git(app, "checkout", "-q", "-b", "zzz/refs/heads/main")
    decoy_sha = app_commit(app, "decoy")
    git(app, "checkout", "-q", "main")
    assert decoy_sha != main_sha
    heads = [(str(app), "main")]
    facts = parse_probe(run_probe(probe_command([], heads), tmp_path), [], heads)
    assert facts.heads[(str(app), "main")] == BranchHead(main_sha)


def test_heads_follow_new_commits(tmp_path: Path, app: Path) -> None:
    heads = [(str(app), "main")]
    first = parse_probe(run_probe(probe_command([], heads), tmp_path), [], heads).heads[heads[0]]
    second_sha = app_commit(app, "v2")
    second = parse_probe(run_probe(probe_command([], heads), tmp_path), [], heads).heads[heads[0]]
    assert first.sha is not None and second == BranchHead(second_sha) and first.sha != second_sha


def test_heads_of_a_bare_repository(tmp_path: Path, app: Path) -> None:
    bare = tmp_path / "app.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(app), str(bare)], check=True)
    heads = [(str(bare), "main"), (f"file://{bare}", "main")]
    facts = parse_probe(run_probe(probe_command([], heads), tmp_path), [], heads)
    sha = git(app, "rev-parse", "HEAD")
    assert facts.heads[(str(bare), "main")] == BranchHead(sha)
    assert facts.heads[(f"file://{bare}", "main")] == BranchHead(sha)


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
    heads = [(path, "main") for path, _ in repos]
    facts = parse_probe(run_probe(probe_command([], heads), tmp_path), [], heads)
    assert {key: head.sha for key, head in facts.heads.items()} == {(path, "main"): sha for path, sha in repos}


# --------------------------------------------------------------------------- through the local transport


def test_gather_through_local_transport_is_one_command(tmp_path: Path, app: Path) -> None:
    base = tmp_path / "a b;touch pwned"
    build_server(base)
    sites = [ProbeSite(name, str(base)) for name in SITE_NAMES]
    heads = [(str(app), "main"), (str(app), "nope")]
    transport = LocalTransport()

    async def go() -> ServerFacts:
        return await gather(transport, sites, heads, timeout=60)

    facts = asyncio.run(go())
    no_pwned(tmp_path)
    assert transport.round_trips == 1
    assert facts.sites[DOMAIN].active_release == R_OK
    assert facts.sites["dir.example.com"].path_kind == "dir"
    assert facts.heads[(str(app), "main")] == BranchHead(git(app, "rev-parse", "HEAD"))
    assert facts.heads[(str(app), "nope")].sha is None


# --------------------------------------------------------------------------- parse_probe on its own


def test_parse_probe_ignores_unknown_sites_and_fills_missing_ones() -> None:
    sites = [ProbeSite("a.example.com", "/srv"), ProbeSite("b.example.com", "/srv")]
    output = "\n".join([
        "@site evil.example.com", "@provisioned", f"@release {R_OK}",
        "@site a.example.com", "@provisioned", "@shared", f"@release {R_OK}", f"@release {R_BADDATE}",
        "@manifest {broken",
    ]) + "\n"
    facts = parse_probe(output, sites, [])
    assert set(facts.sites) == {"a.example.com", "b.example.com"}
    assert set(facts.sites["a.example.com"].releases) == {R_OK}
    assert facts.sites["a.example.com"].releases[R_OK].manifest is None  # the manifest was R_BADDATE's
    b = facts.sites["b.example.com"]
    assert (b.path_kind, b.provisioned, b.releases) == ("missing", False, {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (manifest(HEAD, "success").to_json(), manifest(HEAD, "success")),
        ('{"commit": "x", "branch": "main", "repository": "r", "build_key": "k", "status": "success", "extra": 1}',
         Manifest("x", "main", "r", "k", "success")),
        ('{"commit": "x"}', None),  # required fields missing
        ("[]", None),
        ('["commit"]', None),
        ('"commit branch repository build_key status"', None),
        ("null", None),
        ("42", None),
        ("", None),
        ("{not json", None),
    ],
)
def test_manifest_from_json(text: str, expected: Manifest | None) -> None:
    assert Manifest.from_json(text) == expected
