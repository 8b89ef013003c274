"""`reconciler import SERVER... [--base PATH] [--write]`: on servers laid out by hand the
BrokeForge way (plain git clones and symlinks, no reconciler), it prints or writes one
declaration per site, never over an existing file, and lists each site it cannot read with the
reason; committed as written, the next pass adopts every site: Synced, pinned to its live
release, and no release directory made or removed. Over real sshd servers (one, and two)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from reconciler.core.declarations import SITES_DIR
from tests.support.brokeforge import LIVE, OLDER, brokeforge_site, release_dirs
from tests.support.cli_world import CliWorld
from tests.support.repos import git, make_app_repo
from tests.support.sshd import ServerPair, SshServer
from tests.support.world import World

SHOP, BLOG, BROKEN = "shop.example.com", "blog.example.com", "broken.example.com"


def lay_out(base: Path, app: Path) -> None:
    """Three sites by hand: shop on main (two releases), blog detached at a tag, broken dangling."""
    git(app, "tag", "v1")
    brokeforge_site(base, SHOP, app, (OLDER, LIVE))
    brokeforge_site(base, BLOG, app, checkout="v1", shared=("storage",))
    (base / "deployments" / BROKEN).mkdir(parents=True)
    (base / BROKEN).symlink_to(f"deployments/{BROKEN}/{LIVE}")


def test_import_write_then_commit_adopts_every_readable_site_without_deploying(
        sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECONCILER_CONFIG", raising=False)
    world = World.create(tmp_path / "w", server=sshd)
    lay_out(world.base, world.app)
    before = release_dirs(world.base)
    rc, out, err = world.run_cli("import", sshd.destination, "--base", str(world.base), "--write")
    assert rc == 1, (out, err)  # one site could not be imported
    assert f"wrote {SITES_DIR}/{BLOG}.toml" in out and f"wrote {SITES_DIR}/{SHOP}.toml" in out
    assert (f"  {BROKEN} on {sshd.destination}: the site link {world.base}/{BROKEN} is dangling "
            "(its release is gone)") in out
    assert not (world.decl / SITES_DIR / f"{BROKEN}.toml").exists()
    shop = tomllib.loads((world.decl / SITES_DIR / f"{SHOP}.toml").read_text())
    assert shop == {"server": sshd.destination, "base_path": str(world.base), "repository": str(world.app),
                    "branch": "main", "pin": LIVE, "shared": ["storage", ".env"]}
    assert tomllib.loads((world.decl / SITES_DIR / f"{BLOG}.toml").read_text())["tag"] == "v1"
    rc, out, err = world.run_cli("validate", str(world.decl))
    assert (rc, out.splitlines()[-1]) == (0, "2 valid, 0 invalid"), (out, err)
    git(world.decl, "add", "-A")
    git(world.decl, "commit", "-qm", "import sites")
    rc, out, err = world.run_cli("reconcile")
    assert rc == 0, (out, err)
    views = world.status_views()
    for domain in (SHOP, BLOG):
        assert (views[domain]["sync"], views[domain]["active_release"], views[domain]["pinned"]) == \
            ("Synced", LIVE, LIVE), views[domain]
    assert release_dirs(world.base) == before, "nothing built, nothing pruned"
    assert all(not (world.base / "deployments" / d / LIVE / ".reconciler.json").exists() for d in (SHOP, BLOG))


def test_write_never_overwrites_a_declaration_and_says_which_it_skipped(world: CliWorld) -> None:
    lay_out(world.base, world.app)
    mine = world.declare(SHOP, script="composer install\n")
    kept = mine.read_text()
    rc, out, err = world.cli("import", "local", "--base", str(world.base), "--write")
    assert rc == 1, (out, err)
    assert f"skipped {SITES_DIR}/{SHOP}.toml: it exists (left as it is)" in out
    assert f"wrote {SITES_DIR}/{BLOG}.toml" in out and mine.read_text() == kept
    rc, out, err = world.cli("import", "local", "--base", str(world.base), "--write")
    assert f"skipped {SITES_DIR}/{BLOG}.toml" in out and "wrote" not in out


def test_without_write_it_prints_the_declarations_and_changes_nothing(world: CliWorld) -> None:
    lay_out(world.base, world.app)
    before = git(world.decl, "status", "--porcelain")
    rc, out, err = world.cli("import", "local", "--base", str(world.base))
    assert rc == 1, (out, err)
    blocks = out.split(f"# --- {SITES_DIR}/")[1:]
    assert [block.split(".toml\n", 1)[0] for block in blocks] == [BLOG, SHOP]
    text = blocks[1].split(".toml\n", 1)[1].split("\nimport: ", 1)[0]
    assert tomllib.loads(text)["pin"] == LIVE
    assert git(world.decl, "status", "--porcelain") == before and not list((world.decl / SITES_DIR).iterdir())


def test_a_server_without_the_layout_is_said_and_every_site_imported_exits_0(world: CliWorld) -> None:
    out = world.ok("import", "local", "--base", str(world.base / "empty"))
    assert out == f"import: local: no {world.base}/empty/deployments/ directory: no BrokeForge-layout site there\n"
    brokeforge_site(world.base, SHOP, world.app)
    assert "# --- sites.d/shop.example.com.toml" in world.ok("import", "local", "--base", str(world.base))


def test_usage_errors_exit_2_and_write_nothing(world: CliWorld, tmp_path: Path) -> None:
    lay_out(world.base, world.app)
    for argv, said in [(("import", "--", "-oProxyCommand=x"), "is not a server"),
                       (("import", "local", "--base", "/srv/my sites"), "--base may only contain"),
                       (("import", "local", "--base", "relative"), "--base must be an absolute path")]:
        rc, out, err = world.cli(*argv)
        assert (rc, out) == (2, ""), (argv, out, err)
        assert said in err, (argv, err)
    bare = tmp_path / "bare.git"
    git(tmp_path, "clone", "-q", "--bare", str(world.decl), str(bare))
    rc, out, err = world.cli("import", "local", "--base", str(world.base), "--write", repo=bare)
    assert rc == 2 and "needs the declarations repository's work tree" in err, (out, err)
    assert not (bare / SITES_DIR).exists()


def test_a_server_that_cannot_be_reached_is_listed(sshd: SshServer, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECONCILER_CONFIG", raising=False)
    world = World.create(tmp_path / "w", server=sshd)
    sshd.stop()
    rc, out, err = world.run_cli("import", sshd.destination, "--base", str(world.base))
    assert rc == 1, (out, err)
    assert out.startswith(f"import: 1 site(s) not imported:\n  (every site) on {sshd.destination}: cannot read "
                          "the server: "), out


def test_a_site_on_two_servers_becomes_one_declaration_and_is_adopted_on_both(
        sshd_pair: ServerPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECONCILER_CONFIG", raising=False)
    first, second = sshd_pair.servers
    app = make_app_repo(tmp_path / "app")
    world = World.create(tmp_path / "w", server=first, app=app, base=Path(sshd_pair.base_path))
    for server in (first, second):
        brokeforge_site(sshd_pair.dir_of(server), SHOP, app, (OLDER, LIVE))
    # BLOG's servers went live at different times: no one release to pin on both.
    brokeforge_site(sshd_pair.dir_of(first), BLOG, app, (LIVE,))
    brokeforge_site(sshd_pair.dir_of(second), BLOG, app, (OLDER,))
    before = [release_dirs(sshd_pair.dir_of(server)) for server in (first, second)]
    rc, out, err = world.run_cli("import", first.destination, second.destination, "--base", sshd_pair.base_path,
                                 "--write")
    assert rc == 1, (out, err)
    assert f"  {BLOG} on {first.destination}, {second.destination}: the servers run different live releases" in out
    shop = tomllib.loads((world.decl / SITES_DIR / f"{SHOP}.toml").read_text())
    assert (shop["servers"], shop["pin"]) == ([first.destination, second.destination], LIVE)
    git(world.decl, "add", "-A")
    git(world.decl, "commit", "-qm", "import sites")
    rc, out, err = world.run_cli("reconcile")
    assert rc == 0, (out, err)
    assert world.status_views()[SHOP]["sync"] == "Synced"
    assert [release_dirs(sshd_pair.dir_of(server)) for server in (first, second)] == before
