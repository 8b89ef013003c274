"""The import command (one per server) reads the BrokeForge-layout sites under a base path from
the live releases' git work trees, and its reader says, for each site it cannot import, why.
The command runs for real (/bin/sh through the local transport) on layouts built by hand."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from reconciler.errors import TransportError
from reconciler.remote.protocol.importing import RECORD_END, Survey, Tag, frame, import_command, parse_import
from reconciler.remote.transport.local import LocalTransport
from tests.support.brokeforge import LIVE, OLDER, brokeforge_site
from tests.support.repos import git, make_app_repo

SHOP, BLOG = "shop.example.com", "blog.example.com"


def run(base: Path) -> Survey:
    command = import_command(str(base))
    result = asyncio.run(LocalTransport().run(command.text, stdin=command.stdin, timeout=60))
    assert result.ok, result.stderr
    return parse_import(result.stdout, str(base))


@pytest.fixture
def app(tmp_path: Path) -> Path:
    app = make_app_repo(tmp_path / "app")
    git(app, "tag", "v1")
    return app


def test_the_live_release_s_origin_branch_commit_and_shared_links_are_read(tmp_path: Path, app: Path) -> None:
    base = tmp_path / "srv"
    brokeforge_site(base, SHOP, app, (OLDER, LIVE), shared=("storage", ".env", "vendor"))
    (found,) = run(base).sites
    assert (found.name, found.problem, found.release, found.releases) == (SHOP, None, LIVE, 2)
    assert (found.origin, found.branch, found.commit) == (str(app), "main", git(app, "rev-parse", "HEAD"))
    assert sorted(found.shared) == [".env", "storage", "vendor"]


def test_a_detached_live_release_reports_its_exact_tag_or_none(tmp_path: Path, app: Path) -> None:
    base = tmp_path / "srv"
    first = git(app, "rev-parse", "HEAD")
    (app / "b.txt").write_text("b")
    git(app, "add", "-A")
    git(app, "commit", "-qm", "v2")
    brokeforge_site(base, SHOP, app, checkout="v1", absolute=True)
    brokeforge_site(base, BLOG, app, checkout="HEAD")
    sites = {site.name: site for site in run(base).sites}
    assert (sites[SHOP].branch, sites[SHOP].tag, sites[SHOP].commit) == (None, "v1", first)
    assert (sites[BLOG].branch, sites[BLOG].tag) == (None, None) and sites[BLOG].problem is None


def test_each_site_that_cannot_be_read_fully_says_why(tmp_path: Path, app: Path) -> None:
    base = tmp_path / "srv"
    brokeforge_site(base, SHOP, app)
    reasons = {}
    (base / "deployments" / "nolink.example.com").mkdir(parents=True)
    (base / "deployments" / "dir.example.com").mkdir()
    (base / "dir.example.com").mkdir()
    (base / "deployments" / "gone.example.com").mkdir()
    (base / "gone.example.com").symlink_to(f"deployments/gone.example.com/{LIVE}")
    (base / "deployments" / "plain.example.com" / LIVE).mkdir(parents=True)
    (base / "plain.example.com").symlink_to(f"deployments/plain.example.com/{LIVE}")
    live = brokeforge_site(base, "origin.example.com", app)
    git(live, "remote", "remove", "origin")
    (base / "deployments" / "elsewhere.example.com").mkdir()
    (base / "elsewhere.example.com").symlink_to(str(live))
    brokeforge_site(base, "Not_A.example.com", app)
    for site in run(base).sites:
        reasons[site.name] = site.problem
    assert reasons.pop(SHOP) is None
    assert reasons == {
        "nolink.example.com": f"no site link {base}/nolink.example.com",
        "dir.example.com": f"{base}/dir.example.com is a real directory or file, not a symlink",
        "gone.example.com": f"the site link {base}/gone.example.com is dangling (its release is gone)",
        "plain.example.com": f"the live release {LIVE} is not a git work tree",
        "origin.example.com": "the live release's git work tree has no usable remote 'origin'",
        "elsewhere.example.com": f"the site link points at {str(live)!r}, not a release under "
                                 "deployments/elsewhere.example.com/",
        "Not_A.example.com": "the directory name is not a domain: label 'Not_A' is not [a-z0-9-] without "
                        "leading/trailing '-'",
    }


def test_git_never_answers_for_a_repository_around_the_base_path(tmp_path: Path, app: Path) -> None:
    """A release without its own .git inside a base path that is itself in a git repository."""
    base = tmp_path / "srv"
    base.mkdir()
    git(base, "init", "-q")
    git(base, "remote", "add", "origin", "/somewhere/else.git")
    (base / "deployments" / SHOP / LIVE).mkdir(parents=True)
    (base / SHOP).symlink_to(f"deployments/{SHOP}/{LIVE}")
    (found,) = run(base).sites
    assert found.problem == f"the live release {LIVE} is not a git work tree" and found.origin is None


def test_a_base_path_without_deployments_is_said_and_a_quoted_odd_one_is_data(tmp_path: Path) -> None:
    assert run(tmp_path / "nothing-here").no_layout
    odd = tmp_path / "it's $(touch pwned) here"
    assert run(odd).no_layout and not (tmp_path / "pwned").exists()


def test_output_cut_short_or_not_of_the_framing_raises() -> None:
    good = frame(Tag.SITE, SHOP) + frame(Tag.NOLINK)
    assert parse_import(good + frame(Tag.END), "/srv").sites[0].problem == "no site link /srv/shop.example.com"
    for broken in (good, good + "@end", good + frame("@nosuch") + frame(Tag.END),
                   frame(Tag.NOLINK) + frame(Tag.END),
                   frame(Tag.SITE, SHOP) + frame(Tag.RELEASES, "many") + frame(Tag.END),
                   frame(Tag.SITE, SHOP) + frame(Tag.COMMIT, "a" * 40) * 2 + frame(Tag.END)):
        with pytest.raises(TransportError, match="import output cannot be trusted"):
            parse_import(broken, "/srv")


def test_a_value_holding_record_text_stays_its_own_value() -> None:
    forged = f"x{RECORD_END}{Tag.SITE} evil.example.com"
    output = (frame(Tag.SITE, SHOP) + frame(Tag.LINK, f"deployments/{SHOP}/{LIVE}") + frame(Tag.RELEASES, "1")
              + frame(Tag.ORIGIN, forged) + frame(Tag.BRANCH, "main") + frame(Tag.COMMIT, "a" * 40) + frame(Tag.END))
    (site,) = parse_import(output, "/srv").sites
    assert site.origin == "x@site evil.example.com" and site.problem is None  # the NUL cannot be sent


def test_a_site_whose_answers_are_missing_is_not_guessed() -> None:
    output = frame(Tag.SITE, SHOP) + frame(Tag.LINK, f"deployments/{SHOP}/{LIVE}") + frame(Tag.END)
    (site,) = parse_import(output, "/srv").sites
    assert site.problem == "the server did not say its origin, commit"
