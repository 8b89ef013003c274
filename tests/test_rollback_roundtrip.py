"""`rollback` / `unpin` round trip with the daemon running: the operator's comments and layout
survive, the commits are on the branch with messages naming site and release, and the daemon
applies each within its watch, without a rebuild."""

from __future__ import annotations

from pathlib import Path

from tests.builders import app_commit, git, make_app_repo, make_decl_repo, write_site
from tests.daemon_support import Launcher, SiteOnDisk, wait_until, write_config

DOMAIN = "roundtrip.example.com"


def test_rollback_and_unpin_keep_comments_commit_and_apply(tmp_path: Path) -> None:
    app = make_app_repo(tmp_path / "app")
    decl = make_decl_repo(tmp_path / "decl")
    base = tmp_path / "srv"
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
    run = Launcher(tmp_path, write_config(tmp_path / "reconciler.toml", repo=decl, state=tmp_path / "state",
                                          interval=2))
    site = SiteOnDisk(base, DOMAIN)
    try:
        run.start()
        wait_until(lambda: site.active() is not None, 30, "the first deploy", run.diagnostics)
        first = site.active()
        app_commit(app, "v2")
        wait_until(lambda: site.active() not in (None, first), 30, "the second deploy", run.diagnostics)
        second = site.active()
        releases = site.releases()

        done = run.cli("rollback", DOMAIN)
        assert done.returncode == 0, done.stderr
        assert first is not None and first.rsplit("/", 1)[-1] in done.stdout
        wait_until(lambda: site.active() == first, 30, "the daemon to apply the pin", run.diagnostics)
        text = (decl / "sites.d" / f"{DOMAIN}.toml").read_text()
        assert text.startswith(original.rstrip("\n").split("\n# deploy")[0]), text
        assert "# Shop: owned by the web team. Keep this comment." in text and "# on this machine" in text
        assert "# deploy steps" in text
        message = git(decl, "log", "-1", "--format=%s", "main")
        assert DOMAIN in message and first.rsplit("/", 1)[-1] in message
        assert git(decl, "status", "--porcelain") == "", "the checkout stays clean"

        done = run.cli("unpin", DOMAIN)
        assert done.returncode == 0, done.stderr
        wait_until(lambda: site.active() == second, 30, "the daemon to apply the unpin", run.diagnostics)
        assert (decl / "sites.d" / f"{DOMAIN}.toml").read_text() == original, "unpin restores the file exactly"
        assert site.releases() == releases, "rollback and unpin never rebuild"
    finally:
        run.close()
