"""A site may follow a `tag` or a `commit` instead of a `branch`, with real git repositories.

A tag site deploys exactly the commit its tag names (an annotated tag's commit, not the tag
object), follows the tag when it is moved (`git tag -f`) and says so in history and the log; a
commit site deploys exactly its commit and never moves with the branch. Releases of both are
detached checkouts (no branch to pull by mistake); status and history say which ref was used.
Local sites, the CLI in this process, a real state database; and once over a real sshd.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.declaration_files import parse_site
from reconciler.core.declarations import InvalidSite, SiteDeclaration
from reconciler.core.manifest import Manifest
from tests.support import MANIFEST_NAME, World, app_commit, git, neutral_world, toml_value, write_site
from tests.support.sshd import SshServer

DOMAIN = "shop.example.com"
TAG = "v1.4.2"


@pytest.fixture(name="world")
def world_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return neutral_world(tmp_path, monkeypatch)  # its config opts in to local sites


def _reconcile(world: World) -> tuple[int, str]:
    rc, out, err = world.run_cli("reconcile")
    return rc, out + err


def _status(world: World) -> dict[str, Any]:
    rc, out, err = world.run_cli("status", "--json")
    assert rc in (0, 1), err
    views: list[dict[str, Any]] = json.loads(out)
    return next(v for v in views if v["domain"] == DOMAIN)


def _declare_commit(world: World, sha: str) -> None:
    """A commit site (World.declare and write_site take `commit=` as "commit the file")."""
    raw = "".join(f"{key} = {toml_value(value)}\n" for key, value in {
        "server": world.server_name, "base_path": str(world.base), "repository": str(world.app), "commit": sha}.items())
    write_site(world.decl, DOMAIN, raw=raw)


def _live(world: World) -> Path:
    return (world.base / DOMAIN).resolve()


def _tag(app: Path, name: str, annotated: bool, *, force: bool = False, target: str = "HEAD") -> None:
    args = ["tag", *(["-f"] if force else []), *(["-a", "-m", f"release {name}"] if annotated else []), name, target]
    git(app, *args)


def _detached(release: Path) -> bool:
    """True when the release's HEAD is on no branch."""
    return git(release, "rev-parse", "--abbrev-ref", "HEAD") == "HEAD"


def _manifest(release: Path) -> Manifest:
    manifest = Manifest.from_json((release / MANIFEST_NAME).read_text())
    assert manifest is not None
    return manifest


# --------------------------------------------------------------------------- tag sites


@pytest.mark.parametrize("annotated", [True, False], ids=["annotated", "lightweight"])
def test_a_tag_site_deploys_exactly_the_commit_the_tag_names(world: World, annotated: bool) -> None:
    tagged = app_commit(world.app, "the release")
    _tag(world.app, TAG, annotated)
    if annotated:
        assert git(world.app, "rev-parse", TAG) != tagged, "an annotated tag is an object of its own"
    main = app_commit(world.app, "work after the release")  # the branch moves on; the tag does not
    world.declare(tag=TAG, script="echo built\n")

    rc, out = _reconcile(world)
    assert rc == 0, out
    live = _live(world)
    assert git(live, "rev-parse", "HEAD") == tagged != main
    assert _detached(live), "a tag's release is checked out detached"
    assert git(live, "remote", "get-url", "origin") == str(world.app)
    assert (live / "public" / "index.php").read_text() == "<?php echo 'the release';\n"
    assert _manifest(live).branch == f"tag {TAG}"

    status = _status(world)
    assert (status["sync"], status["active_commit"], status["desired_commit"]) == ("Synced", tagged, tagged)
    assert status["ref"] == f"tag {TAG}"
    (row,) = world.history_rows()
    assert (row["commit_sha"], row["branch"], row["ref"], row["trigger"]) == (tagged, None, f"tag {TAG}",
                                                                             "first deploy")
    rc, out, err = world.run_cli("history", DOMAIN)
    assert rc == 0 and f"tag {TAG}" in out, out + err
    rc, out, err = world.run_cli("status", DOMAIN)
    assert f"desired:   {tagged[:12]} (tag {TAG})" in out, out + err

    # Nothing moves the site while the tag stays: not the branch, not another pass.
    app_commit(world.app, "more work")
    rc, out = _reconcile(world)
    assert rc == 0, out
    assert world.releases() == [live.name]


@pytest.mark.parametrize("annotated", [True, False], ids=["annotated", "lightweight"])
def test_a_moved_tag_is_followed_recorded_and_logged(world: World, annotated: bool,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    first = app_commit(world.app, "first")
    _tag(world.app, TAG, annotated)
    world.declare(tag=TAG)
    rc, out = _reconcile(world)
    assert rc == 0, out
    before = _live(world)
    assert git(before, "rev-parse", "HEAD") == first

    # Moved to a commit on no branch at all (a hotfix tagged from a scratch branch, since deleted):
    # the mirror fetches tags, not only branches.
    git(world.app, "checkout", "-q", "-b", "scratch")
    moved = app_commit(world.app, "hotfix")
    _tag(world.app, TAG, annotated, force=True)
    git(world.app, "checkout", "-q", "main")
    git(world.app, "branch", "-q", "-D", "scratch")
    assert git(world.app, "branch", "--contains", moved) == ""

    with caplog.at_level(logging.INFO, logger="reconciler"):
        rc, out = _reconcile(world)
    assert rc == 0, out
    after = _live(world)
    assert after != before and git(after, "rev-parse", "HEAD") == moved and _detached(after)
    newest, older = world.history_rows()[:2]
    assert (newest["commit_sha"], newest["trigger"], newest["ref"], newest["is_active"]) == (
        moved, "tag moved", f"tag {TAG}", True)
    assert (older["commit_sha"], older["ref"]) == (first, f"tag {TAG}")
    moved_lines = [r.getMessage() for r in caplog.records if "moved" in r.getMessage()]
    assert any(f"tag {TAG}" in line and moved[:12] in line for line in moved_lines), caplog.text
    rc, out, _ = world.run_cli("history", DOMAIN)
    assert "tag moved" in out, out

    # Moved back: the release built from it is still kept, so it is switched to, not rebuilt.
    _tag(world.app, TAG, annotated, force=True, target=first)
    rc, out = _reconcile(world)
    assert rc == 0, out
    assert _live(world) == before and len(world.releases()) == 2


def test_a_deleted_tag_leaves_the_site_alone_and_says_why(world: World) -> None:
    _tag(world.app, TAG, True)
    world.declare(tag=TAG)
    assert _reconcile(world)[0] == 0
    live = _live(world)
    git(world.app, "tag", "-d", TAG)
    rc, out = _reconcile(world)
    assert rc == 1, out
    status = _status(world)
    assert status["sync"] == "Unknown" and f"tag '{TAG}'" in status["message"] and "not found" in status["message"]
    assert _live(world) == live, "nothing is touched while the tag cannot be resolved"


def test_a_branch_of_the_same_name_is_not_the_tag(world: World) -> None:
    """`refs/heads/v1.4.2` and `refs/heads/x/refs/tags/v1.4.2` match `v1.4.2` as ls-remote patterns:
    only `refs/tags/v1.4.2` is the tag."""
    tagged = git(world.app, "rev-parse", "HEAD")
    _tag(world.app, TAG, True)
    for decoy in (TAG, f"x/refs/tags/{TAG}"):
        git(world.app, "checkout", "-q", "-b", decoy)
        app_commit(world.app, f"decoy {decoy}")
        git(world.app, "checkout", "-q", "main")
    world.declare(tag=TAG)
    rc, out = _reconcile(world)
    assert rc == 0, out
    assert git(_live(world), "rev-parse", "HEAD") == tagged


# --------------------------------------------------------------------------- commit sites


def test_a_commit_site_deploys_exactly_that_commit_and_never_moves(world: World) -> None:
    wanted = app_commit(world.app, "the one")
    app_commit(world.app, "later")
    _declare_commit(world, wanted)
    rc, out = _reconcile(world)
    assert rc == 0, out
    live = _live(world)
    assert git(live, "rev-parse", "HEAD") == wanted and _detached(live)
    assert _manifest(live).branch == f"commit {wanted}"
    (row,) = world.history_rows()
    assert (row["branch"], row["ref"]) == (None, f"commit {wanted[:12]}")
    assert _status(world)["ref"] == f"commit {wanted[:12]}"

    app_commit(world.app, "the branch moves on")
    for _ in range(2):
        rc, out = _reconcile(world)
        assert rc == 0, out
    assert world.releases() == [live.name], "the branch moving never deploys a commit site"
    assert _status(world)["sync"] == "Synced"

    # A new commit in the declaration deploys; another one is a declaration change in history.
    newer = world.head()
    _declare_commit(world, newer)
    assert _reconcile(world)[0] == 0
    assert git(_live(world), "rev-parse", "HEAD") == newer
    assert world.history_rows()[0]["trigger"] == "declaration"


def test_a_commit_on_no_branch_is_fetched_by_id(world: World) -> None:
    git(world.app, "checkout", "-q", "-b", "gone")
    lonely = app_commit(world.app, "on a branch that was deleted")
    git(world.app, "checkout", "-q", "main")
    git(world.app, "branch", "-q", "-D", "gone")
    _declare_commit(world, lonely)
    rc, out = _reconcile(world)
    assert rc == 0, out
    assert git(_live(world), "rev-parse", "HEAD") == lonely


def test_a_commit_the_repository_does_not_have_fails_clearly_once(world: World) -> None:
    assert _reconcile(world)[0] == 0  # nothing declared yet
    missing = "0123456789abcdef" * 2 + "01234567"
    _declare_commit(world, missing)
    rc, out = _reconcile(world)
    assert rc == 1, out
    status = _status(world)
    assert status["sync"] == "Failed" and f"commit {missing} is not in the repository" in status["message"], status
    (row,) = world.history_rows()
    assert row["status"] == "failed" and "no branch or tag reaches it" in row["message"]
    # Remembered like any failed build: no hot loop.
    rc, out = _reconcile(world)
    assert rc == 1 and len(world.history_rows()) == 1, out
    # A commit that exists deploys.
    _declare_commit(world, world.head())
    assert _reconcile(world)[0] == 0
    assert git(_live(world), "rev-parse", "HEAD") == world.head()


def test_a_branch_site_still_checks_out_its_branch(world: World) -> None:
    world.declare()
    assert _reconcile(world)[0] == 0
    live = _live(world)
    assert git(live, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(live, "rev-parse", "--abbrev-ref", "main@{upstream}") == "origin/main"
    (row,) = world.history_rows()
    assert (row["branch"], row["ref"]) == ("main", "branch main")
    assert _status(world)["ref"] == "branch main"


# --------------------------------------------------------------------------- over a real sshd


def test_a_tag_over_ssh(tmp_path: Path, sshd: SshServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECONCILER_CONFIG", raising=False)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    world = World.create(tmp_path, sshd)
    first = app_commit(world.app, "first")
    _tag(world.app, TAG, True)
    app_commit(world.app, "not released")
    world.declare(tag=TAG)
    rc, out = _reconcile(world)
    assert rc == 0, out
    assert git(_live(world), "rev-parse", "HEAD") == first and _detached(_live(world))
    moved = app_commit(world.app, "released")
    _tag(world.app, TAG, True, force=True)
    rc, out = _reconcile(world)
    assert rc == 0, out
    assert git(_live(world), "rev-parse", "HEAD") == moved
    assert world.history_rows()[0]["trigger"] == "tag moved"


# --------------------------------------------------------------------------- validation

FILE = f"sites.d/{DOMAIN}.toml"
SHA = "0123456789abcdef" * 2 + "01234567"


def _parse(text: str) -> SiteDeclaration | InvalidSite:
    return parse_site(FILE, ('server = "local"\nrepository = "/srv/git/app.git"\n' + text).encode())


def _errors(text: str) -> tuple[str, ...]:
    parsed = _parse(text)
    assert isinstance(parsed, InvalidSite), parsed
    return parsed.errors


def test_the_default_is_branch_main_and_one_ref_each() -> None:
    for text, kind, name in [("", "branch", "main"), ('branch = "dev"\n', "branch", "dev"),
                             (f'tag = "{TAG}"\n', "tag", TAG), (f'commit = "{SHA}"\n', "commit", SHA),
                             (f'commit = "{"ab" * 32}"\n', "commit", "ab" * 32)]:
        site = _parse(text)
        assert isinstance(site, SiteDeclaration), site
        assert (site.ref.kind, site.ref.name) == (kind, name)
        assert [site.branch, site.tag, site.commit].count(None) == 2
    tag_site = _parse(f'tag = "{TAG}"\n')
    assert isinstance(tag_site, SiteDeclaration) and tag_site.branch is None
    assert tag_site.head_key == ("/srv/git/app.git", f"refs/tags/{TAG}")
    commit_site = _parse(f'commit = "{SHA}"\n')
    assert isinstance(commit_site, SiteDeclaration) and commit_site.head_key is None


@pytest.mark.parametrize(("text", "key", "line"), [
    (f'branch = "main"\ntag = "{TAG}"\n', "tag", 4),
    (f'tag = "{TAG}"\ncommit = "{SHA}"\n', "commit", 4),
    (f'branch = "main"\ncommit = "{SHA}"\n', "commit", 4),
    (f'commit = "{SHA}"\nbranch = "main"\n', "commit", 3),  # named at the later field, on its own line
], ids=["branch-tag", "tag-commit", "branch-commit", "commit-branch"])
def test_at_most_one_of_branch_tag_commit(text: str, key: str, line: int) -> None:
    (error,) = _errors(text)
    assert error == f"{FILE}:{line}: {key}: give at most one of branch, tag and commit", error


@pytest.mark.parametrize("name", ["-x", "--upload-pack=x", "a..b", "v1 2", "v1^{}", "v1~1", "v1:x", "HEAD", "x.lock",
                                  "", "/v1", "v1/", "v1.", "a@{1}", "v1\x07", "v*", "v[1]", "a\\b"])
def test_bad_tag_names(name: str) -> None:
    (error,) = _errors(f"tag = {json.dumps(name)}\n")
    assert error.startswith(f"{FILE}:3: tag: not a valid git tag name:"), error


@pytest.mark.parametrize("value", [SHA[:12], SHA[:39], SHA + "0", SHA.upper(), SHA[:-1] + "g", " " + SHA[1:],
                                   SHA + "\n", "ab" * 31, "ab" * 33, "HEAD", "main", "v1.4.2"])
def test_bad_commits(value: str) -> None:
    (error,) = _errors(f"commit = {json.dumps(value)}\n")
    assert error == f"{FILE}:3: commit: must be a full commit id: 40 (or 64) lower-case hex digits", error


def test_types_are_strict() -> None:
    assert any("tag:" in e for e in _errors("tag = 1\n"))
    assert any("commit:" in e for e in _errors("commit = true\n"))
