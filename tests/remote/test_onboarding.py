"""What the servers hold becomes one declaration per site that `reconciler validate` accepts,
pinned to the live release (the one declaration the planner adopts a release built elsewhere
with, deploying nothing), or the reason it cannot be; and `survey` runs the import command on a
server."""

from __future__ import annotations

import asyncio
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.core.declaration_files import parse_site
from reconciler.core.declarations import SiteDeclaration
from reconciler.core.facts import BranchHead, ReleaseFacts, SiteFacts
from reconciler.core.rollout import plan_rollout
from reconciler.core.status import Sync
from reconciler.errors import TransportError
from reconciler.remote.onboarding import check_base_path, propose, survey
from reconciler.remote.protocol.importing import FoundSite, Survey
from reconciler.remote.transport.local import LocalTransport
from tests.support.brokeforge import LIVE, OLDER, brokeforge_site
from tests.support.repos import git, make_app_repo

SHOP = "shop.example.com"
SHA = "a" * 40
BASE = "/home/brokeforge"


def found(name: str = SHOP, **fields: object) -> FoundSite:
    values: dict[str, object] = {"link": f"deployments/{name}/{LIVE}", "release": LIVE, "releases": 2,
                                 "origin": "git@github.com:acme/shop.git", "branch": "main", "commit": SHA,
                                 "shared": ["storage", ".env", "vendor", "node_modules"], **fields}
    return FoundSite(name, **values)  # type: ignore[arg-type]


def one(*sites: FoundSite, server: str = "web-1", base: str = BASE) -> dict[str, object]:
    (proposal,), refusals = propose({server: Survey(list(sites))}, base)
    assert refusals == []
    checked = parse_site(proposal.filename, proposal.text.encode())
    assert isinstance(checked, SiteDeclaration), checked
    data: dict[str, object] = tomllib.loads(proposal.text)
    return data


def test_a_site_becomes_a_valid_declaration_pinned_to_its_live_release() -> None:
    assert one(found(), server="deploy@web-1:2222") == {
        "server": "deploy@web-1:2222", "repository": "git@github.com:acme/shop.git", "branch": "main", "pin": LIVE}


def test_the_pinned_declaration_is_synced_on_the_adopted_release_where_following_the_branch_builds() -> None:
    """Why the pin: a release without a manifest is a build of no branch (its build key is unknown)."""
    (proposal,), _ = propose({"web-1": Survey([found()])}, BASE)
    site = parse_site(proposal.filename, proposal.text.encode())
    assert isinstance(site, SiteDeclaration)
    facts = SiteFacts(SHOP, BASE, link_target=f"deployments/{SHOP}/{LIVE}", path_kind="symlink", provisioned=True,
                      shared=True, releases={LIVE: ReleaseFacts(LIVE, head=SHA)})
    now = datetime(2026, 12, 6, tzinfo=UTC)
    pinned = plan_rollout(site, {"web-1": facts}, BranchHead(SHA), {}, now)
    assert (pinned.sync, pinned.build, pinned.switch, pinned.prune) == (Sync.SYNCED, None, None, {})
    following = plan_rollout(site.model_copy(update={"pin": None}), {"web-1": facts}, BranchHead(SHA), {}, now)
    assert following.build is not None, "a release built elsewhere is no build of the branch"


def test_base_path_shared_and_keep_are_said_only_where_they_differ_from_the_defaults() -> None:
    data = one(found(shared=["storage", ".env", "uploads"], releases=20), base="/srv/sites")
    assert data["base_path"] == "/srv/sites"
    assert data["shared"] == ["storage", ".env", "uploads"], "only what the live release really links"
    assert data["keep"] == 20, "the first pass prunes none of the server's releases"
    assert "shared" not in one(found(shared=["vendor", ".env", "storage", "node_modules"]))
    assert one(found(shared=[]))["shared"] == []


def test_a_detached_live_release_follows_its_exact_tag_else_its_commit() -> None:
    assert one(found(branch=None, tag="v1.4.2"))["tag"] == "v1.4.2"
    data = one(found(branch=None, tag=None))
    assert data["commit"] == SHA and "branch" not in data


def test_an_origin_with_a_credential_is_refused_without_printing_it() -> None:
    proposals, (refusal,) = propose({"web-1": Survey([found(origin="https://bob:s3cret@git.example.com/a.git")])},
                                    BASE)
    assert proposals == [] and "must not hold credentials" in refusal.reason
    assert "s3cret" not in refusal.reason


def test_a_site_on_several_servers_is_one_declaration_when_they_run_the_same_release() -> None:
    data = one(found())
    (proposal,), _ = propose({"web-1": Survey([found()]), "web-2": Survey([found()])}, BASE)
    both = tomllib.loads(proposal.text)
    assert both == {**{k: v for k, v in data.items() if k != "server"}, "servers": ["web-1", "web-2"]}
    proposals, (refusal,) = propose({"web-1": Survey([found()]), "web-2": Survey([found(release=OLDER)])}, BASE)
    assert proposals == [] and refusal.servers == ("web-1", "web-2")
    assert f"web-1: {LIVE} (branch main), web-2: {OLDER} (branch main)" in refusal.reason


def test_a_site_with_a_problem_is_listed_with_it_on_each_server() -> None:
    broken = found(problem="no site link /home/brokeforge/shop.example.com")
    proposals, (refusal,) = propose({"web-1": Survey([broken]), "web-2": Survey([found()])}, BASE)
    assert proposals == [] and refusal.reason == "web-1: no site link /home/brokeforge/shop.example.com"


def test_a_base_path_is_held_to_the_declarations_rule() -> None:
    assert check_base_path("/srv/sites/") == "/srv/sites"
    with pytest.raises(ValueError, match="may only contain"):
        check_base_path("/srv/my sites")


def test_survey_runs_the_import_command_on_the_server(tmp_path: Path) -> None:
    app = make_app_repo(tmp_path / "app")
    brokeforge_site(tmp_path / "srv", SHOP, app)
    found_there = asyncio.run(survey(LocalTransport(), str(tmp_path / "srv"), 60))
    assert [(s.name, s.commit) for s in found_there.sites] == [(SHOP, git(app, "rev-parse", "HEAD"))]


def test_a_command_that_fails_on_the_server_is_a_transport_error() -> None:
    class Failing(LocalTransport):
        async def run(self, command: str, **kwargs: object) -> object:  # type: ignore[override]
            return await super().run("echo oops >&2; exit 3", **kwargs)  # type: ignore[arg-type]

    with pytest.raises(TransportError, match=r"the import command failed \(exit 3\): oops"):
        asyncio.run(survey(Failing(), "/srv", 60))
