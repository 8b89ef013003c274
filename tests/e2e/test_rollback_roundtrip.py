"""`rollback` / `unpin` round trip with the daemon running: the operator's comments and layout
survive, the commits are on the branch with messages naming site and release, and the daemon
applies each within its watch, without a rebuild."""

from __future__ import annotations

from pathlib import Path

from tests.support import Daemons, World, app_commit, git, write_site

DOMAIN = "roundtrip.example.com"


def test_rollback_and_unpin_keep_comments_commit_and_apply(tmp_path: Path, daemons: Daemons) -> None:
    world = World.create(tmp_path, daemons=daemons, domain=DOMAIN)
    app, decl, base = world.app, world.decl, world.base
    original = (
        "# Shop: owned by the web team. Keep this comment.\n"
        'server     = "local"        # on this machine\n'
        f'base_path  = "{base}"\n'
        f'repository = "{app}"\n'
        "\n"
        "# deploy steps\n"
        'script = """\necho building\n"""\n'
    )
    write_site(decl, DOMAIN, raw=original)
    site = world.on_disk()
    world.start_daemon()
    world.wait(lambda: site.active() is not None, "the first deploy")
    first = site.active()
    app_commit(app, "v2")
    world.wait(lambda: site.active() not in (None, first), "the second deploy")
    second = site.active()
    releases = site.releases()

    done = world.launcher.cli("rollback", DOMAIN)
    assert done.returncode == 0, done.stderr
    assert first is not None and first.rsplit("/", 1)[-1] in done.stdout
    world.wait(lambda: site.active() == first, "the daemon to apply the pin")
    text = (decl / "sites.d" / f"{DOMAIN}.toml").read_text()
    assert text.startswith(original.rstrip("\n").split("\n# deploy")[0]), text
    assert "# Shop: owned by the web team. Keep this comment." in text and "# on this machine" in text
    assert "# deploy steps" in text
    message = git(decl, "log", "-1", "--format=%s", "main")
    assert DOMAIN in message and first.rsplit("/", 1)[-1] in message
    assert git(decl, "status", "--porcelain") == "", "the checkout stays clean"

    done = world.launcher.cli("unpin", DOMAIN)
    assert done.returncode == 0, done.stderr
    world.wait(lambda: site.active() == second, "the daemon to apply the unpin")
    assert (decl / "sites.d" / f"{DOMAIN}.toml").read_text() == original, "unpin restores the file exactly"
    assert site.releases() == releases, "rollback and unpin never rebuild"
