"""probing.probe / parse_probe against REAL directories and git repositories on this machine.

A fake server layout is built in tmp_path, the probe runs through `/bin/sh -c` (and through the
local transport), and the parsed facts are checked. Base paths and repositories full of shell
metacharacters prove that every value is quoted: no `pwned` file may ever appear.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.core.declarations import SiteDeclaration
from reconciler.core.facts import BranchHead, ProbeSite, ServerFacts, SiteFacts
from reconciler.core.layout import MANIFEST_NAME, SitePaths
from reconciler.core.manifest import Manifest
from reconciler.core.plan import FailureMemory, Plan
from reconciler.core.rollout import plan_site
from reconciler.core.status import Health, Sync
from reconciler.errors import SiteLocked
from reconciler.remote.lock import Identity, Owner, held
from reconciler.remote.probe import gather
from reconciler.remote.protocol import probing, seam
from reconciler.remote.protocol.probing import frame, parse_probe
from reconciler.remote.transport.local import LocalTransport
from tests.support import app_commit, git, make_app_repo
from tests.support.sshd import SshServer

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
MAIN = "refs/heads/main"  # heads are probed by full ref (refs/heads/<branch>, refs/tags/<tag>)

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


def run_probe(command: seam.Command, cwd: Path) -> bytes:
    """The probe's raw output: bytes, as a server sends them (parse_probe decodes with replace)."""
    result = subprocess.run(seam.local_argv(command.text), input=(command.stdin or "").encode(), cwd=cwd,
                            capture_output=True, timeout=60)
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


# --------------------------------------------------------------------------- tag heads (issue 13 item 3)


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


def test_tag_head_parsing_prefers_the_peeled_line_and_nothing_looser() -> None:
    key = ("/srv/git/app.git", "refs/tags/v1")
    tag_object, commit, decoy = "1" * 40, "2c" * 20, "3" * 40

    def head(*lines: str, rc: int = 0) -> BranchHead:
        facts = parse_probe(framed(("@heads", f"0 {rc} " + "\n".join(lines))), [], [key])
        return facts.heads[key]

    assert head(f"{tag_object}\trefs/tags/v1", f"{commit}\trefs/tags/v1^{{}}") == BranchHead(commit)
    assert head(f"{commit}\trefs/tags/v1^{{}}", f"{tag_object}\trefs/tags/v1") == BranchHead(commit)  # any order
    assert head(f"{commit}\trefs/tags/v1") == BranchHead(commit)  # lightweight: no peeled line
    for decoy_ref in ("zzz/refs/tags/v1^{}", "refs/tags/v1^{}x", "refs/tags/v1 ^{}", "refs/tags/v1^{commit}",
                      "refs/heads/v1^{}", "refs/tags/v1\u2028^{}"):
        assert head(f"{decoy}\t{decoy_ref}", f"{tag_object}\trefs/tags/v1",
                    f"{commit}\trefs/tags/v1^{{}}") == BranchHead(commit), decoy_ref
        assert head(f"{decoy}\t{decoy_ref}", f"{commit}\trefs/tags/v1") == BranchHead(commit), decoy_ref
    assert head(f"{decoy}\tzzz/refs/tags/v1^{{}}").error == "tag 'v1' not found in /srv/git/app.git"
    assert head(f"{commit.upper()}\trefs/tags/v1^{{}}", f"{tag_object}\trefs/tags/v1") == BranchHead(tag_object)
    two = head(f"{commit}\trefs/tags/v1^{{}}", f"{decoy}\trefs/tags/v1^{{}}")
    assert two.sha is None and two.error == "tag 'v1' is listed with 2 different commits"
    failed = head("fatal: could not read from remote repository", rc=128)
    assert failed == BranchHead(None, "fatal: could not read from remote repository")


# --------------------------------------------------------------------------- through the local transport


def test_gather_through_local_transport_is_one_command(tmp_path: Path, app: Path) -> None:
    base = tmp_path / "a b;touch pwned"
    build_server(base)
    sites = [ProbeSite(name, str(base)) for name in SITE_NAMES]
    heads = [(str(app), MAIN), (str(app), "refs/heads/nope")]
    transport = LocalTransport()

    async def go() -> ServerFacts:
        return await gather(transport, sites, heads, timeout=60)

    facts = asyncio.run(go())
    no_pwned(tmp_path)
    assert transport.round_trips == 1
    assert facts.sites[DOMAIN].active_release == R_OK
    assert facts.sites["dir.example.com"].path_kind == "dir"
    assert facts.heads[(str(app), MAIN)] == BranchHead(git(app, "rev-parse", "HEAD"))
    assert facts.heads[(str(app), "refs/heads/nope")].sha is None


# --------------------------------------------------------------------------- parse_probe on its own


def framed(*records: tuple[str, ...]) -> str:
    """Probe output as the shell prints it: NUL-ended records, then the end record."""
    return "".join(frame(*record) for record in records) + frame("@end")


def test_parse_probe_ignores_unknown_sites_and_fills_missing_ones() -> None:
    sites = [ProbeSite("a.example.com", "/srv"), ProbeSite("b.example.com", "/srv")]
    output = framed(
        ("@site", "evil.example.com"), ("@provisioned",), ("@release", R_OK),
        ("@site", "a.example.com"), ("@provisioned",), ("@shared",), ("@release", R_OK), ("@release", R_BADDATE),
        ("@manifest", "{broken"),
    )
    facts = parse_probe(output, sites, [])
    assert set(facts.sites) == {"a.example.com", "b.example.com"}
    assert set(facts.sites["a.example.com"].releases) == {R_OK}
    assert facts.sites["a.example.com"].releases[R_OK].manifest is None  # the manifest was R_BADDATE's
    b = facts.sites["b.example.com"]
    assert (b.path_kind, b.provisioned, b.releases) == ("missing", False, {})


def mjson(**fields: object) -> str:
    """A manifest's JSON: a minimal valid one, with `fields` changed."""
    return json.dumps({"commit": HEAD, "branch": "main", "repository": "r", "build_key": "k", "status": "success",
                       **fields})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (manifest(HEAD, "success").to_json(), manifest(HEAD, "success")),
        (mjson(extra=1), Manifest(HEAD, "main", "r", "k", "success")),
        (mjson(branch="m\x1b[2J", status="failed", message="\x1b]0;PWNED\x07"),
         Manifest(HEAD, "m\\x1b[2J", "r", "k", "failed", message="\\x1b]0;PWNED\\x07")),  # escaped (L4)
        (mjson(commit="x"), None),
        (mjson(commit=HEAD.upper()), None),  # a sha is lower-case hex
        (mjson(commit=HEAD + "\n"), None),
        (mjson(status="ok"), None),
        (mjson(branch=1), None),
        (mjson(declarations_commit="HEAD"), None),
        (mjson(build_key="k k"), None),
        ('{"commit": "x"}', None),  # required fields missing
        ("[" * 200_000, None),  # a bomb: refused before json.loads (no RecursionError)
        ('{"a":' * 100 + "1" + "}" * 100, None),  # deeper than the decoder reads
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


# --------------------------------------------------------------------------- hostile server data (H1, M4, M6, L4)
#
# Each of these failed before the probe framed its records with NUL and validated every field.


def _commit_on_branch(app: Path, branch: str, message: str) -> str:
    git(app, "checkout", "-q", "-b", branch)
    sha = app_commit(app, message)
    git(app, "checkout", "-q", "main")
    return sha


def _update_ref(app: Path, ref: bytes, sha: str) -> None:
    """A ref whose name is bytes (git accepts any byte but controls, space and a few ASCII signs)."""
    subprocess.run([b"git", b"check-ref-format", ref], cwd=app, check=True)
    subprocess.run([b"git", b"update-ref", ref, sha.encode()], cwd=app, check=True)


def test_h1_a_ref_name_cannot_forge_the_branch_head(tmp_path: Path, app: Path) -> None:
    """H1: a pusher of any branch names a ref so that U+2028 splits it into a fake
    `<sha> refs/heads/main` line; `\\xff` in another ref used to fail the whole probe (M4c)."""
    main_sha = git(app, "rev-parse", "HEAD")
    evil = _commit_on_branch(app, "feature/x", "EVIL unreviewed")
    forged = f"refs/heads/zzz\u2028|{evil}\u3000refs/heads/main\u2028/refs/heads/main".encode()
    _update_ref(app, forged, evil)
    _update_ref(app, f"refs/heads/zzz\u0085{evil}\u2029refs/heads/main\u2029/refs/heads/main".encode(), evil)
    _update_ref(app, b"refs/heads/zzz\xff/refs/heads/main", evil)
    _update_ref(app, b"refs/heads/\xff\xfe", evil)
    heads = [(str(app), MAIN), (str(app), "refs/heads/feature/x")]
    facts = asyncio.run(gather(LocalTransport(), [], heads, timeout=60))
    assert facts.heads[(str(app), MAIN)] == BranchHead(main_sha)
    assert facts.heads[(str(app), "refs/heads/feature/x")] == BranchHead(evil)


def test_h1_the_same_repository_over_ssh(sshd_session: SshServer, tmp_path: Path, app: Path) -> None:
    """Over SSH the output used to be decoded strictly: one `\\xff` ref name failed the probe of
    every site on the server (M4c). Now the other repository and `main` both resolve."""
    from reconciler.remote.transport.ssh import SshOptions, SshTransport

    main_sha = git(app, "rev-parse", "HEAD")
    evil = _commit_on_branch(app, "feature/x", "EVIL")
    _update_ref(app, b"refs/heads/zzz\xff/refs/heads/main", evil)
    _update_ref(app, f"refs/heads/zzz\u2028|{evil}\u3000refs/heads/main\u2028/refs/heads/main".encode(), evil)
    clean = make_app_repo(tmp_path / "clean")
    base = tmp_path / "srv"
    release(base / "deployments" / DOMAIN, R_OK, manifest(HEAD, "success"))
    os.symlink(f"deployments/{DOMAIN}/{R_OK}", base / DOMAIN)
    sites = [ProbeSite(DOMAIN, str(base))]
    heads = [(str(app), MAIN), (str(clean), MAIN)]

    async def go() -> ServerFacts:
        transport = SshTransport(sshd_session.destination, SshOptions(
            sshd_session.identity_file, sshd_session.known_hosts, connect_timeout=10.0))
        try:
            return await gather(transport, sites, heads, timeout=60)
        finally:
            await transport.close()

    facts = asyncio.run(go())
    assert facts.heads[(str(app), MAIN)] == BranchHead(main_sha)
    assert facts.heads[(str(clean), MAIN)] == BranchHead(git(clean, "rev-parse", "HEAD"))
    assert facts.sites[DOMAIN].active_release == R_OK


def _server_with_victim(base: Path) -> None:
    """Site a: a live release and an older one, both successful. Site z: whatever the test plants."""
    deployments = base / "deployments" / "a.example.com"
    (deployments / "shared").mkdir(parents=True)
    release(deployments, R_OK, manifest(HEAD, "success"))
    release(deployments, R_NEWER, manifest(OLD, "success"))
    os.symlink(f"deployments/a.example.com/{R_NEWER}", base / "a.example.com")
    (base / "deployments" / "z.example.com" / "shared").mkdir(parents=True)


VICTIM_SITES = ["a.example.com", "z.example.com", "b.example.com"]


def _probe_sites(base: Path, cwd: Path) -> ServerFacts:
    sites = [ProbeSite(name, str(base)) for name in VICTIM_SITES]
    return parse_probe(run_probe(probing.probe(sites, []), cwd), sites, [])


def test_m6_a_symlink_target_cannot_forge_another_sites_records(tmp_path: Path) -> None:
    """M6 repro 2: z's symlink target carried `\\n@site a.example.com\\n@link ...` and fake releases;
    prune then deleted all of a's releases, the live one included."""
    clean = tmp_path / "clean"
    _server_with_victim(clean)
    expected = _probe_sites(clean, tmp_path).sites["a.example.com"]

    base = tmp_path / "srv"
    _server_with_victim(base)
    fake = [f"@release 0{n}012099-000000\n@manifest " + manifest(OLD, "success").to_json() for n in range(1, 10)]
    payload = "\n".join([
        f"deployments/z.example.com/{R_OK}", "@site a.example.com",
        "@link deployments/a.example.com/01012099-000013", "@provisioned", "@shared", *fake,
        f"@release {R_OK}", f"@release {R_NEWER}", "@site z.example.com",
        f"@link deployments/z.example.com/{R_OK}",
        "\x00@site a.example.com"[1:], "@end",
    ])
    # Every framing this probe ever used, and the one it uses now (NUL cannot be in a path).
    os.symlink(payload + "\n", base / "z.example.com")
    os.symlink("x\n@site a.example.com\n@link /etc\n@dangling", base / "b.example.com")
    facts = _probe_sites(base, tmp_path)
    a = facts.sites["a.example.com"]
    assert (a.link_target, a.path_kind, a.dangling, a.provisioned, a.shared) == (
        f"deployments/a.example.com/{R_NEWER}", "symlink", False, True, True)
    assert set(a.releases) == set(expected.releases) == {R_OK, R_NEWER}
    assert a.active_release == R_NEWER and a.problem is None
    assert {n: r.manifest for n, r in a.releases.items()} == {n: r.manifest for n, r in expected.releases.items()}
    z = facts.sites["z.example.com"]
    assert z.path_kind == "symlink" and z.link_target is None and z.active_release is None  # not a path of ours
    assert z.releases == {} and z.problem is None
    assert facts.sites["b.example.com"].active_release is None


def test_m4_a_symlink_target_with_a_heads_record_does_not_crash_the_probe(tmp_path: Path, app: Path) -> None:
    """M4(b): `x\\n@heads ² 0` as a site symlink target raised ValueError (int('²')) for every site."""
    base = tmp_path / "srv"
    _server_with_victim(base)
    os.symlink("x\n@heads \u00b2 0", base / "z.example.com")
    os.symlink("x\n@heads 0 0\n|" + "f" * 40 + "\trefs/heads/main", base / "b.example.com")
    sites = [ProbeSite(name, str(base)) for name in VICTIM_SITES]
    heads = [(str(app), MAIN)]
    facts = parse_probe(run_probe(probing.probe(sites, heads), tmp_path), sites, heads)
    assert facts.heads[(str(app), MAIN)] == BranchHead(git(app, "rev-parse", "HEAD"))
    assert facts.sites["a.example.com"].active_release == R_NEWER
    for name in ("z.example.com", "b.example.com"):
        site = facts.sites[name]
        assert site.path_kind == "symlink" and site.active_release is None and site.problem is None


def test_m4_a_manifest_bomb_is_that_sites_problem_only(tmp_path: Path) -> None:
    """M4(b): a manifest of 200,000 `[` raised RecursionError and aborted the whole pass."""
    base = tmp_path / "srv"
    _server_with_victim(base)
    bomb = "01012020-000000"
    release(base / "deployments" / "z.example.com", bomb, "[" * 200_000)
    release(base / "deployments" / "z.example.com", R_OK, manifest(HEAD, "success"))
    os.symlink(f"deployments/z.example.com/{R_OK}", base / "z.example.com")
    facts = _probe_sites(base, tmp_path)
    z = facts.sites["z.example.com"]
    assert z.problem == (f"malformed manifest deployments/z.example.com/{bomb}/{MANIFEST_NAME}: "
                         "larger than 65536 bytes (200000)")
    assert z.releases[bomb].corrupt and z.releases[bomb].manifest is None
    assert z.releases[R_OK].manifest == manifest(HEAD, "success")
    assert facts.sites["a.example.com"].problem is None
    assert facts.sites["a.example.com"].active_release == R_NEWER
    # The planner leaves z alone, Unknown, saying why; a is planned as usual.
    declared = SiteDeclaration.model_validate({"domain": "z.example.com", "server": "local", "base_path": str(base),
                                               "repository": "/srv/git/z.git"})
    plan = plan_site(declared, z, BranchHead(OLD), FailureMemory(), datetime.now(UTC))
    assert plan == Plan((), Sync.UNKNOWN, Health.UNKNOWN, z.problem)
    # Under the size limit but deeper than any manifest: refused unread as well.
    (base / "deployments" / "z.example.com" / bomb / MANIFEST_NAME).write_text("[" * 60_000)
    assert _probe_sites(base, tmp_path).sites["z.example.com"].problem == (
        f"malformed manifest deployments/z.example.com/{bomb}/{MANIFEST_NAME}: nesting deeper than 32")


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


def test_m4_lock_owner_bombs_are_no_owner(tmp_path: Path) -> None:
    """M4(b): a lock owner of 200,000 `[` (RecursionError), `"pid": 2**70` (OverflowError)."""
    base = tmp_path / "srv"
    _server_with_victim(base)
    lock_dir = base / "deployments" / "z.example.com" / ".reconciler-lock"
    lock_dir.mkdir()
    (lock_dir / "owner").write_text("[" * 200_000 + "\n")
    z = _probe_sites(base, tmp_path).sites["z.example.com"]
    assert z.lock == "[" * 200_000 and Owner.from_text(z.lock) is None and z.problem is None
    huge = {"instance": "i", "run": "r", "host": "h", "pid": 2**70, "purpose": "", "since": 1.0}
    (lock_dir / "owner").write_text(json.dumps(huge) + "\n")
    z = _probe_sites(base, tmp_path).sites["z.example.com"]
    assert z.lock is not None and Owner.from_text(z.lock) is None


@pytest.mark.parametrize("owner", [
    "[" * 200_000,
    "[" * 1024,  # what `head -c 1024` leaves of it
    json.dumps({"instance": "me-instance", "run": "old-run", "host": socket.gethostname(), "pid": 2**70,
                "purpose": "x", "since": 1.0}),
    json.dumps({"instance": "me-instance", "run": "old-run", "host": socket.gethostname(), "pid": 1,
                "purpose": "x", "since": 10**400}),
    '{"instance": "me-instance", "run": "old-run", "host": "h", "pid": 1, "since": NaN}',
], ids=["bomb", "bomb-1k", "pid-2**70", "since-10**400", "since-NaN"])
def test_m4_held_with_a_hostile_owner_file_is_locked_not_a_crash(tmp_path: Path, owner: str) -> None:
    paths = SitePaths(str(tmp_path / "srv"), DOMAIN)
    Path(paths.lock).mkdir(parents=True)
    Path(paths.lock, "owner").write_text(owner + "\n")
    me = Identity("me-instance", "new-run", socket.gethostname(), os.getpid())

    async def go() -> None:
        async with held(LocalTransport(), paths, me, "test", stale_after=300, timeout=30):
            pass

    with pytest.raises(SiteLocked, match="locked by another reconciler"):
        asyncio.run(go())
    assert Path(paths.lock, "owner").read_text() == owner + "\n"  # not taken over: a fresh, unknown owner


def test_l4_a_lock_owner_cannot_drive_the_terminal(tmp_path: Path) -> None:
    """L4: a foreign owner's host and purpose reached `reconcile` output raw."""
    paths = SitePaths(str(tmp_path / "srv"), DOMAIN)
    Path(paths.lock).mkdir(parents=True)
    hostile = {"instance": "other", "run": "r", "pid": 42, "since": 1.0,
               "host": "\u001b]0;PWNED-TITLE\u0007\u001b[2J\u001b[1;32mall sites Synced\u001b[8m",
               "purpose": "deploy\nreconcile: everything is fine\u202e"}
    Path(paths.lock, "owner").write_text(json.dumps(hostile) + "\n")
    me = Identity("me-instance", "run", "me-host", os.getpid())

    async def go() -> None:
        async with held(LocalTransport(), paths, me, "test", stale_after=300, timeout=30):
            pass

    with pytest.raises(SiteLocked) as caught:
        asyncio.run(go())
    message = str(caught.value)
    assert not any(not ch.isprintable() for ch in message), repr(message)
    assert "\\x1b]0;PWNED-TITLE\\x07" in message and "pid 42" in message


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


def test_unlinked_shared_entries_are_read_only_for_entries_the_site_has() -> None:
    """Issue 12 item 3: `@unlinked` names a shared entry of the live release that is no symlink;
    a name the site does not share is a problem of that site only, never another site's fact."""
    sites = [ProbeSite("a.example.com", "/srv", (".env", "storage")), ProbeSite("b.example.com", "/srv", (".env",))]
    output = "".join([frame(probing.Tag.SITE, "a.example.com"), frame(probing.Tag.UNLINKED, ".env"),
                      frame(probing.Tag.UNLINKED, "/etc/passwd"), frame(probing.Tag.SITE, "b.example.com"),
                      frame(probing.Tag.UNLINKED, ".env"), frame(probing.Tag.END)])
    facts = parse_probe(output, sites, [])
    a, b = facts.sites["a.example.com"], facts.sites["b.example.com"]
    assert a.unlinked == [".env"] and a.problem is not None and "/etc/passwd" in a.problem
    assert b.unlinked == [".env"] and b.problem is None


def test_batched_link_reads_give_the_same_facts_as_one_readlink_per_site(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """GNU find reads every site link of a probe in one process (issue 15); a server without it
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
    # `$(readlink)` drops the newlines a target ends with (protocol/probing.py); find reads it exactly,
    # and a target with a line break is no plain path of ours.
    assert batched.sites["c.example.com"].link_target is None
    assert one_by_one.sites["c.example.com"].link_target == "trailing"
    for domain in domains:
        if domain != "c.example.com":
            assert batched.sites[domain] == one_by_one.sites[domain], domain


def test_remembered_manifests_and_link_reads_follow_the_files(tmp_path: Path) -> None:
    """Issue 15 remembers parsed manifests by their text and link targets by (base, domain, target):
    a manifest rewritten on the server (a build recorded failed, a hand edit) or a link switched is
    seen by the next probe, and a manifest that stops parsing is corrupt again, not remembered."""
    from reconciler.remote.transport.local import LocalTransport

    base = tmp_path / "srv"
    release, other = "01012025-000000", "02012025-000000"
    for name in (release, other):
        (base / "deployments" / "m.example.com" / name).mkdir(parents=True)
    os.symlink(f"deployments/m.example.com/{release}", base / "m.example.com")
    manifest = base / "deployments" / "m.example.com" / release / MANIFEST_NAME
    good = Manifest("a" * 40, "main", "/srv/app", "k", "success", "2025-01-01T00:00:00Z")
    sites = [ProbeSite("m.example.com", str(base))]

    def probe() -> SiteFacts:
        return asyncio.run(gather(LocalTransport(), sites, [], timeout=30)).sites["m.example.com"]

    manifest.write_text(good.to_json() + "\n")
    first = probe()
    assert first.releases[release].status == "success" and first.active_release == release
    manifest.write_text(dataclasses.replace(good, status="failed").to_json() + "\n")
    assert probe().releases[release].status == "failed"
    manifest.write_text(good.to_json() + "\n")
    assert probe().releases[release].status == "success"
    manifest.write_text(good.to_json()[:-5] + "\n")  # cut short
    assert probe().releases[release].corrupt
    os.remove(base / "m.example.com")
    os.symlink(f"deployments/m.example.com/{other}", base / "m.example.com")
    assert probe().active_release == other
